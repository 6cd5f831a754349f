"""The short distillation fine-tune between DE cycles, run through the common training loop.

loss = ``netrazor.train.distillation_loss``: alpha · T² · KL(teacher_T ‖ student_T) + (1 − alpha) · CE
(Hinton et al. 2015). ``alpha = 1`` is pure distillation. The teacher is frozen and in eval mode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netrazor.methods.masks import MaskKeeper
from netrazor.train.losses import distillation_loss_fn as distill_loss_fn  # the one implementation, under this module's name
from netrazor.train.schedule import LRSchedule


@dataclass(frozen=True)
class ShiftedSchedule:
    """``base``'s learning-rate factor ``offset`` optimizer steps later."""

    base: LRSchedule
    offset: int

    def factor(self, step: int) -> float:
        return self.base.factor(step + self.offset)


@dataclass(frozen=True)
class ContinuedSchedule:
    """Trainer callback: this fine-tune is epochs ``[start_epoch, start_epoch + its epochs)`` of ONE
    recipe schedule of ``total_epochs`` epochs — learning rate and shuffle order pick up where the
    previous cycle's fine-tune stopped, so the cycles together see exactly the learning rates and
    example orders of one uninterrupted ``total_epochs`` run (e.g. the magnitude baseline's).
    The optimizer (momentum) still starts fresh each cycle."""

    start_epoch: int
    total_epochs: int

    def on_train_start(self, trainer: Any) -> None:
        whole = LRSchedule.from_config(dataclasses.replace(trainer.config, epochs=self.total_epochs),
                                       trainer.steps_per_epoch)
        trainer.schedule = ShiftedSchedule(whole, self.start_epoch * trainer.steps_per_epoch)

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        trainer.train_loader.set_epoch(self.start_epoch + epoch)


def finetune_with_masks(adapter: Any, model: nn.Module, masks: dict[str, torch.Tensor], epochs: int,
                        loss_fn=None, lr: float | None = None,
                        continued: ContinuedSchedule | None = None) -> list[dict]:
    """``adapter.train`` for ``epochs`` epochs while pruned weights stay exactly zero
    (``lr`` overrides the recipe's learning rate: fine-tuning usually wants a smaller one;
    ``continued``: run these epochs as a slice of one longer schedule instead of a schedule of their own)."""
    if epochs <= 0:
        return []
    overrides = {} if lr is None else {"lr": lr}
    callbacks = [MaskKeeper(model, masks)] + ([continued] if continued is not None else [])
    return list(adapter.train(model, epochs=epochs, callbacks=callbacks, loss_fn=loss_fn, **overrides))
