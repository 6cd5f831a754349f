"""Unstructured magnitude masks kept through retraining.

Masks are a means, never the result: they hold pruned weights at zero while the network retrains
between rounds; the final model is handed to surgery, which removes what became linear or dead.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from netrazor.methods.entropy_depth._compat import CallbackBase


class WeightMasks:
    """One boolean keep-mask per weighted module (``module.weight``), keyed by module name."""

    def __init__(self, model: nn.Module, names: Iterable[str]) -> None:
        modules = dict(model.named_modules())
        self.masks: dict[str, torch.Tensor] = {n: modules[n].weight.detach() != 0 for n in names}

    def alive(self, names: Iterable[str]) -> int:
        return sum(int(self.masks[n].sum()) for n in names)

    def mean_abs(self, model: nn.Module, names: Iterable[str]) -> float:
        """Mean |w| over the surviving weights of ``names`` (m_l of the budget rule)."""
        modules = dict(model.named_modules())
        total, count = 0.0, 0
        for n in names:
            w = modules[n].weight.detach()
            m = self.masks[n]
            total += float(w.abs()[m].sum())
            count += int(m.sum())
        return total / count if count else 0.0

    @torch.no_grad()
    def prune(self, model: nn.Module, names: list[str], amount: int) -> int:
        """Zero the ``amount`` smallest-|w| surviving weights pooled over ``names``; returns pruned count."""
        if amount <= 0 or not names:
            return 0
        modules = dict(model.named_modules())
        scores = torch.cat([modules[n].weight.detach().abs().flatten()[self.masks[n].flatten()] for n in names])
        amount = min(amount, scores.numel())
        if amount == 0:
            return 0
        # Exactly `amount` weights: sort once and cut by rank (ties broken by position, stable).
        order = torch.argsort(scores, stable=True)
        drop = torch.zeros(scores.numel(), dtype=torch.bool)
        drop[order[:amount]] = True
        offset = 0
        for n in names:
            m = self.masks[n].flatten()
            k = int(m.sum())
            idx = m.nonzero().flatten()
            m[idx[drop[offset : offset + k]]] = False
            self.masks[n] = m.view_as(self.masks[n])
            offset += k
        self.apply(model)
        return amount

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        modules = dict(model.named_modules())
        for n, m in self.masks.items():
            if n in modules:
                modules[n].weight.mul_(m.to(modules[n].weight.device, modules[n].weight.dtype))

    def state(self) -> Mapping[str, torch.Tensor]:
        return dict(self.masks)


class KeepMasks(CallbackBase):
    """Training callback: re-apply the masks at the start and after every optimiser step."""

    def __init__(self, masks: WeightMasks) -> None:
        self.masks = masks

    def on_train_start(self, trainer) -> None:  # noqa: ANN001
        self.masks.apply(trainer.model)

    def on_step_end(self, trainer, step, loss) -> None:  # noqa: ANN001
        self.masks.apply(trainer.model)
