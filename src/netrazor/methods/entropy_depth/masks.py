"""NEPENTHE's mask state: one keep-mask per feeding layer, pruned in per-rectifier groups.

Masks are a means, never the result: they hold pruned weights at zero while the network retrains
between rounds (``netrazor.methods.masks.MaskKeeper``); the final model is handed to surgery,
which removes what became linear or dead. The mechanics (masks from weights, pooled magnitude
pruning, applying) are the shared ones in ``netrazor.methods.masks``; this class only adds the
per-group views the EGP budget rule needs (alive count, mean |w| of survivors).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from netrazor.methods.masks import apply_masks, count_alive, masks_from_weights, prunable_layers, prune_smallest


class WeightMasks:
    """One boolean keep-mask per weighted module (``module.weight``), keyed by module name."""

    def __init__(self, model: nn.Module, names: Iterable[str]) -> None:
        self.masks: dict[str, torch.Tensor] = masks_from_weights(prunable_layers(model, names))

    def alive(self, names: Iterable[str]) -> int:
        return count_alive({n: self.masks[n] for n in names})

    def mean_abs(self, model: nn.Module, names: Iterable[str]) -> float:
        """Mean |w| over the surviving weights of ``names`` (m_l of the budget rule)."""
        names = list(names)
        modules = prunable_layers(model, names)
        total = sum(float(modules[n].weight.detach().abs()[self.masks[n]].sum()) for n in names)
        count = self.alive(names)
        return total / count if count else 0.0

    def prune(self, model: nn.Module, names: list[str], amount: int) -> int:
        """Zero the ``amount`` smallest-|w| surviving weights pooled over ``names``; returns pruned count."""
        if amount <= 0 or not names:
            return 0
        amount = min(amount, self.alive(names))
        if amount == 0:
            return 0
        self.masks.update(prune_smallest(prunable_layers(model, names), {n: self.masks[n] for n in names}, amount))
        self.apply(model)
        return amount

    def apply(self, model: nn.Module) -> None:
        present = dict(model.named_modules())  # a layer surgery already removed has nothing to mask
        names = [n for n in self.masks if n in present]
        apply_masks(prunable_layers(model, names), {n: self.masks[n] for n in names})

    def state(self) -> Mapping[str, torch.Tensor]:
        return dict(self.masks)

