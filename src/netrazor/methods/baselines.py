"""Baselines for the sparsity methods: global magnitude pruning (Han et al. 2015 style).

``global_magnitude_prune`` ranks |w| over the weights of all selected Linear/Conv layers together
and zeroes the smallest ``sparsity`` fraction — the semantics of
``torch.nn.utils.prune.global_unstructured(..., pruning_method=L1Unstructured)`` — but with our
plain bool masks and exact zeros in the weights (no forward pre-hooks, no ``weight_orig``), so the
result is an ordinary module. Optional fine-tuning keeps the zeros with the same ``MaskKeeper``
callback DE uses (``netrazor.methods.masks``), so "same fine-tuning budget" means the same epochs
through the same loop.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from netrazor.errors import ConfigError
from netrazor.methods.evolution.distill import distill_loss_fn, finetune_with_masks
from netrazor.methods.masks import apply_masks, density, prunable_layers, prune_smallest


@torch.no_grad()
def global_magnitude_masks(model: nn.Module, sparsity: float, layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Bool keep-masks zeroing the ``round(sparsity * total)`` smallest |w| over the selected layers.

    Already-zero weights count as the smallest (so re-pruning a sparse model only adds zeros).
    Ties are broken by position (stable sort), so the masks are deterministic.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ConfigError(f"sparsity {sparsity} is outside [0, 1]; give the fraction of weights to zero.")
    mods = prunable_layers(model, layers)
    everything = {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in mods.items()}
    n_zero = int(round(sparsity * sum(m.weight.numel() for m in mods.values())))
    return prune_smallest(mods, everything, n_zero)


def global_magnitude_prune(model: nn.Module, sparsity: float, layers: Sequence[str] | None = None, *,
                           adapter: Any = None, finetune_epochs: int = 0, distill: bool = False,
                           temperature: float = 4.0, lr: float | None = None) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Prune ``model`` in place; optionally fine-tune it ``finetune_epochs`` epochs through
    ``adapter.train`` (cross-entropy, or distillation from a copy of the unpruned model when
    ``distill``). Returns ``(model, masks)``."""
    teacher = copy.deepcopy(model).eval() if distill and finetune_epochs > 0 else None
    masks = global_magnitude_masks(model, sparsity, layers)
    mods = prunable_layers(model, masks.keys())
    apply_masks(mods, masks)
    if finetune_epochs > 0:
        if adapter is None:
            raise ConfigError("finetune_epochs > 0 needs an adapter (netrazor.methods.base.Adapter) to train with.")
        loss_fn = distill_loss_fn(teacher, temperature) if teacher is not None else None
        finetune_with_masks(adapter, model, masks, finetune_epochs, loss_fn, lr)
        model.eval()
    return model, masks


def iterative_magnitude_prune(model: nn.Module, sparsity: float, steps: int, *, adapter: Any,
                              finetune_epochs: int, layers: Sequence[str] | None = None,
                              lr: float | None = None) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Deep Compression's prune-retrain loop (Han et al. 2015): ``steps`` rounds of global magnitude
    pruning, each followed by fine-tuning, with the density falling geometrically to ``1 - sparsity``
    (step k keeps ``(1 - sparsity) ** (k / steps)``) and the ``finetune_epochs`` split as evenly as
    possible over the rounds (earlier rounds get the remainder). The masks nest: a weight pruned in one
    round stays zero. ``steps=1`` is one-shot pruning then fine-tuning."""
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}; 1 prunes in one shot.")
    if finetune_epochs < steps:
        raise ConfigError(f"{finetune_epochs} fine-tuning epochs cannot follow each of {steps} pruning rounds; "
                          f"give finetune_epochs >= steps or fewer steps.")
    base, extra = divmod(int(finetune_epochs), int(steps))
    masks: dict[str, torch.Tensor] = {}
    for k in range(1, steps + 1):
        step_sparsity = 1.0 - (1.0 - sparsity) ** (k / steps)
        model, masks = global_magnitude_prune(model, step_sparsity, layers, adapter=adapter,
                                              finetune_epochs=base + (1 if k <= extra else 0), lr=lr)
    return model, masks


@dataclass
class MagnitudePruning:
    """Method-object form of the baseline: ``run(model, adapter) -> (pruned copy, record)``."""

    sparsity: float = 0.9
    layers: Sequence[str] | None = None
    finetune_epochs: int = 0
    distill: bool = False
    temperature: float = 4.0
    finetune_lr: float | None = None

    def run(self, model: nn.Module, adapter: Any) -> tuple[nn.Module, dict]:
        started = time.perf_counter()
        pruned = copy.deepcopy(model)
        pruned, masks = global_magnitude_prune(pruned, self.sparsity, self.layers, adapter=adapter,
                                               finetune_epochs=self.finetune_epochs, distill=self.distill,
                                               temperature=self.temperature, lr=self.finetune_lr)
        total = sum(m.numel() for m in masks.values())
        record = {
            "method": "magnitude",
            "knobs": {"sparsity": self.sparsity, "layers": list(self.layers) if self.layers else None,
                      "finetune_epochs": self.finetune_epochs, "distill": self.distill},
            "layers": {n: {"numel": m.numel(), "nonzero": int(m.sum()), "density": density(m)} for n, m in masks.items()},
            "overall_density": sum(int(m.sum()) for m in masks.values()) / max(1, total),
            "compress_seconds": time.perf_counter() - started,
        }
        record["val_accuracy"] = float(adapter.evaluate(pruned, "val")["accuracy"]) if adapter is not None else None
        return pruned, record
