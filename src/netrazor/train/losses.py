"""Loss functions of the training loop: cross-entropy (with label smoothing) and distillation."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# loss_fn(model, x, y) -> (loss, logits): the one signature the Trainer calls.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    """The default ``loss_fn``: mean cross-entropy, optionally label-smoothed (Szegedy et al. 2016)."""

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits

    return loss_fn


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor | None = None,
    temperature: float = 4.0,
    alpha: float = 1.0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Knowledge distillation (Hinton, Vinyals & Dean 2015): ``alpha * T^2 * KL + (1 - alpha) * CE``.

    KL is ``KL(softmax(teacher/T) || softmax(student/T))`` averaged over the batch; the ``T^2``
    factor keeps its gradient scale independent of ``T``. ``alpha=1`` is pure distillation (no
    labels needed); with ``alpha < 1`` the hard-label cross-entropy needs ``targets`` and uses the
    recipe's ``label_smoothing``, as the plain loss does.
    The teacher is detached: gradients reach the student only.
    """
    if temperature <= 0:
        from netrazor.errors import ConfigError

        raise ConfigError(f"temperature must be > 0, got {temperature}; 4.0 is the usual choice.")
    if not 0.0 <= alpha <= 1.0:
        from netrazor.errors import ConfigError

        raise ConfigError(f"alpha must be in [0, 1], got {alpha}; alpha weighs distillation against cross-entropy.")
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / t, dim=1)
    kd = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)
    if alpha >= 1.0:
        return kd
    if targets is None:
        from netrazor.errors import ConfigError

        raise ConfigError("distillation_loss with alpha < 1 needs targets for the cross-entropy term; pass targets= or alpha=1.")
    return alpha * kd + (1.0 - alpha) * F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)


def distillation_loss_fn(teacher: nn.Module, temperature: float = 4.0, alpha: float = 1.0,
                         label_smoothing: float = 0.0) -> LossFn:
    """A ``loss_fn(model, x, y) -> (loss, logits)`` for ``Trainer`` / ``Adapter.train`` that distils
    ``teacher`` into the model being trained (:func:`distillation_loss`). The teacher is put in eval
    mode and frozen: it is a fixed target, never trained or updated through BN statistics."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = model(x)
        with torch.no_grad():
            t_logits = teacher(x)
        return distillation_loss(logits, t_logits, y, temperature=temperature, alpha=alpha,
                                 label_smoothing=label_smoothing), logits

    return loss_fn
