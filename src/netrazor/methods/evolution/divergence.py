"""Teacher–student divergences, batched over a leading candidate dimension.

Contract of a divergence (pluggable: pass any callable with this signature):
``divergence(student_logits [P, B, C], teacher_logits [B, C]) -> [P]`` — lower is better, one
value per candidate, averaged over the ``B`` examples of the evaluation batch.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from netrazor.errors import ConfigError

Divergence = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """KL(teacher_T ‖ student_T) of softmax outputs at temperature T (Hinton et al. 2015), mean
    over examples. Not multiplied by T² (that factor only rescales gradients in distillation; here
    it would only rescale ``tolerance``)."""
    log_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean(-1)


def logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Mean squared logit difference (temperature unused): a scale-sensitive alternative."""
    return (student_logits - teacher_logits).pow(2).mean(-1).mean(-1)


DIVERGENCES: dict[str, Callable[..., torch.Tensor]] = {"kl": kl_divergence, "mse": logit_mse}


def resolve_divergence(divergence: str | Divergence, temperature: float) -> Divergence:
    if callable(divergence):
        return divergence
    if divergence not in DIVERGENCES:
        raise ConfigError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)} or pass a callable.")
    return partial(DIVERGENCES[divergence], temperature=temperature)
