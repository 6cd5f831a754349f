"""The short distillation fine-tune between DE cycles, run through the common training loop.

loss = T² · KL(teacher_T ‖ student_T) + ce_weight · CE(student, y)   (Hinton et al. 2015; the T²
keeps gradient magnitudes comparable across temperatures). The teacher is frozen and in eval mode.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from netrazor.methods.evolution.masks import MaskKeeper


def distill_loss_fn(teacher: nn.Module, temperature: float = 4.0, ce_weight: float = 0.0):
    """A ``loss_fn(model, x, y) -> (loss, logits)`` for ``Trainer`` / ``Adapter.train``."""

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = model(x)
        with torch.no_grad():
            t_logits = teacher(x)
        t = temperature
        kl = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(t_logits / t, dim=1),
                      reduction="batchmean", log_target=True)
        loss = (t * t) * kl
        if ce_weight:
            loss = loss + ce_weight * F.cross_entropy(logits, y)
        return loss, logits

    return loss_fn


def finetune_with_masks(adapter: Any, model: nn.Module, masks: dict[str, torch.Tensor], epochs: int,
                        loss_fn=None) -> list[dict]:
    """``adapter.train`` for ``epochs`` epochs while pruned weights stay exactly zero."""
    if epochs <= 0:
        return []
    return adapter.train(model, epochs=epochs, callbacks=[MaskKeeper(model, masks)], loss_fn=loss_fn)
