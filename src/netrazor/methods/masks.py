"""Unstructured weight masks kept through training, shared by every sparsity method.

Masks are a means, never the result: a mask is a bool tensor shaped like a layer's ``weight``
(True = the weight survives) that holds pruned weights at exactly zero while the network trains.
The weights themselves are zeroed, so the model stays an ordinary dense-format module whose exact
zeros ``measure.count_nonzero``, the codec and surgery see; the masks are then dropped.

Users: evolution (DE search + distillation fine-tune), ``baselines`` (global magnitude pruning) and
entropy_depth (NEPENTHE's per-round magnitude pruning).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from netrazor.errors import ConfigError
from netrazor.train import Callback

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


def masks_from_weights(layers: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Current masks: a weight survives when it is non-zero (so already-sparse models resume)."""
    return {n: m.weight.detach() != 0 for n, m in layers.items()}


@torch.no_grad()
def apply_masks(layers: Mapping[str, nn.Module], masks: Mapping[str, torch.Tensor]) -> None:
    """Zero every weight whose mask is False (in place)."""
    for n, mask in masks.items():
        w = layers[n].weight
        w.mul_(mask.to(device=w.device, dtype=w.dtype))


def density(mask: torch.Tensor) -> float:
    return float(mask.sum().item()) / mask.numel()


def densities(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {n: density(m) for n, m in masks.items()}


def count_alive(masks: Mapping[str, torch.Tensor]) -> int:
    """Surviving weights over all ``masks``."""
    return sum(int(m.sum()) for m in masks.values())


@torch.no_grad()
def prune_smallest(layers: Mapping[str, nn.Module], masks: Mapping[str, torch.Tensor], amount: int) -> dict[str, torch.Tensor]:
    """New masks with exactly ``min(amount, alive)`` fewer survivors: the smallest |w| among the
    surviving weights, pooled over all ``masks`` (Han et al. 2015 global magnitude pruning).

    Ties are broken by position in the order of ``masks`` then row-major (stable sort), so the
    result is deterministic; with all-True masks this equals
    ``torch.nn.utils.prune.global_unstructured(..., L1Unstructured, amount=amount)``. The weights
    are not touched (call ``apply_masks``); the given masks are not modified.
    """
    names = list(masks)
    # Rank on CPU: one pooled sort, and index tensors on one device whatever the model's device.
    keep = {n: masks[n].detach().flatten().cpu() for n in names}
    scores = [layers[n].weight.detach().abs().flatten().cpu()[keep[n]] for n in names]
    total = sum(s.numel() for s in scores)
    amount = max(0, min(int(amount), total))
    if amount == 0:
        return {n: masks[n].clone() for n in names}
    out: dict[str, torch.Tensor] = {}
    drop = torch.zeros(total, dtype=torch.bool)
    drop[torch.argsort(torch.cat(scores), stable=True)[:amount]] = True
    start = 0
    for n, s in zip(names, scores):
        m = keep[n].clone()
        m[m.nonzero().flatten()[drop[start:start + s.numel()]]] = False
        out[n] = m.view_as(masks[n]).to(masks[n].device)
        start += s.numel()
    return out


class MaskKeeper(Callback):
    """Training callback that keeps pruned weights at exactly zero while training.

    Gradients of pruned weights are zeroed after backward (so momentum never builds up for them)
    and the weights are re-masked after every optimiser step (weight decay / momentum could still
    move them), at the start and at the end of training. ``masks`` is held by reference: masks
    edited in place (or replaced under the same key) between fits are picked up.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
        self.layers = prunable_layers(model, masks.keys())
        self.masks = masks

    def on_train_start(self, trainer=None) -> None:  # noqa: ANN001
        apply_masks(self.layers, self.masks)

    def on_after_backward(self, trainer=None) -> None:  # noqa: ANN001
        for n, mask in self.masks.items():
            g = self.layers[n].weight.grad
            if g is not None:
                g.mul_(mask.to(device=g.device, dtype=g.dtype))

    def on_step_end(self, trainer=None, step=None, loss=None) -> None:  # noqa: ANN001
        apply_masks(self.layers, self.masks)

    def on_train_end(self, trainer=None) -> None:  # noqa: ANN001
        apply_masks(self.layers, self.masks)
