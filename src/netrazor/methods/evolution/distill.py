"""The short distillation fine-tune between DE cycles, run through the common training loop.

loss = ``netrazor.train.distillation_loss``: alpha · T² · KL(teacher_T ‖ student_T) + (1 − alpha) · CE
(Hinton et al. 2015). ``alpha = 1`` is pure distillation. The teacher is frozen and in eval mode.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from netrazor.methods.masks import MaskKeeper
from netrazor.train.losses import distillation_loss_fn as distill_loss_fn  # the one implementation, under this module's name


def finetune_with_masks(adapter: Any, model: nn.Module, masks: dict[str, torch.Tensor], epochs: int,
                        loss_fn=None, lr: float | None = None) -> list[dict]:
    """``adapter.train`` for ``epochs`` epochs while pruned weights stay exactly zero
    (``lr`` overrides the recipe's learning rate: fine-tuning usually wants a smaller one)."""
    if epochs <= 0:
        return []
    overrides = {} if lr is None else {"lr": lr}
    return list(adapter.train(model, epochs=epochs, callbacks=[MaskKeeper(model, masks)], loss_fn=loss_fn, **overrides))
