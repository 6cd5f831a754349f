"""Unstructured weight masks: which layers are prunable, how dense they are, how masks stay applied.

A mask is a bool tensor shaped like a layer's ``weight`` (True = the weight survives). Masks are
the working state of the search only: the weights themselves are zeroed, so the student is an
ordinary dense-format model with exact zeros that ``measure.count_nonzero`` and the codec see.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from netrazor.errors import ConfigError

try:  # the common training loop's callback base, when that area has landed
    from netrazor.train import Callback as _CallbackBase  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the train area being present
    _CallbackBase = object

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_layers(model: nn.Module, names: Iterable[str] | None = None) -> dict[str, nn.Module]:
    """Linear / Conv modules by qualified name, in forward-definition order (``named_modules``).

    ``names`` restricts the set; an unknown or non-prunable name raises ``ConfigError``.
    """
    found = {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}
    if names is None:
        if not found:
            raise ConfigError("the model has no Linear/Conv layers to prune; pass a model with weight layers.")
        return found
    names = list(names)
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigError(
            f"layers {missing} are not prunable Linear/Conv modules of this model; "
            f"choose among {sorted(found)}."
        )
    return {n: found[n] for n in found if n in set(names)}


def masks_from_weights(layers: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Current masks: a weight survives when it is non-zero (so already-sparse models resume)."""
    return {n: m.weight.detach() != 0 for n, m in layers.items()}


@torch.no_grad()
def apply_masks(layers: dict[str, nn.Module], masks: dict[str, torch.Tensor]) -> None:
    """Zero every weight whose mask is False (in place)."""
    for n, mask in masks.items():
        w = layers[n].weight
        w.mul_(mask.to(device=w.device, dtype=w.dtype))


def density(mask: torch.Tensor) -> float:
    return float(mask.sum().item()) / mask.numel()


def densities(masks: dict[str, torch.Tensor]) -> dict[str, float]:
    return {n: density(m) for n, m in masks.items()}


class MaskKeeper(_CallbackBase):  # type: ignore[misc, valid-type]
    """Training callback that keeps pruned weights at exactly zero during fine-tuning.

    Gradients of pruned weights are zeroed after backward (so momentum never builds up for them)
    and the weights are re-masked after every optimiser step (weight decay / momentum could still
    move them). Hooks not needed here are inherited no-ops from ``netrazor.train.Callback``; the
    fallback definitions below keep it usable with any loop that calls them duck-typed.
    """

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        self.layers = prunable_layers(model, masks.keys())
        self.masks = masks

    def on_train_start(self, trainer=None) -> None:
        apply_masks(self.layers, self.masks)

    def on_after_backward(self, trainer=None) -> None:
        for n, mask in self.masks.items():
            g = self.layers[n].weight.grad
            if g is not None:
                g.mul_(mask.to(device=g.device, dtype=g.dtype))

    def on_step_end(self, trainer=None, step=None, loss=None) -> None:
        apply_masks(self.layers, self.masks)

    def on_train_end(self, trainer=None) -> None:
        apply_masks(self.layers, self.masks)

    # Remaining hooks of the Callback contract (no-ops unless the base class provides them).
    if _CallbackBase is object:  # pragma: no cover - only without the train area

        def on_epoch_start(self, trainer=None, epoch=None) -> None:
            pass

        def extra_loss(self, trainer=None):
            return None

        def on_epoch_end(self, trainer=None, epoch=None, metrics=None) -> None:
            pass

        def state_dict(self) -> dict:
            return {}

        def load_state_dict(self, d: dict) -> None:
            pass
