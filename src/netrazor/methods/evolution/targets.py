"""Per-layer density targets: from a dict, or one global target split over layers by a rule.

Split rules (``split_rule``), all [REC] — the paper gives "a sparsity target per layer" but no rule
for deriving them from one global number:

``"magnitude"`` (default)
    The per-layer densities that global magnitude pruning would produce at the same global density
    (rank |w| over all prunable weights, keep the largest). It lets the network's own weight
    statistics decide which layers are redundant, and it makes DE and the global-magnitude baseline
    directly comparable: same per-layer budgets, DE only chooses *which* weights go.
    A floor ``min_density`` keeps every layer alive (an emptied layer disconnects the network);
    budget freed or taken by the floor is re-ranked over the other layers.
``"uniform"``
    Every layer gets the global density.

The global density counts only the weights of the selected layers (biases and norms excluded),
and the per-layer keep counts add up exactly to ``round(global_density * total)`` whenever the
floor allows it.
"""

from __future__ import annotations

import torch
from torch import nn

from netrazor.errors import ConfigError

SPLIT_RULES = ("magnitude", "uniform")


def _check_density(name: str, d: float) -> float:
    d = float(d)
    if not 0.0 <= d <= 1.0:
        raise ConfigError(f"density target {d} for {name} is outside [0, 1]; give the fraction of weights to keep.")
    return d


def keep_counts(layers: dict[str, nn.Module], targets: dict[str, float] | float,
                split_rule: str = "magnitude", min_density: float = 0.01) -> dict[str, int]:
    """Number of weights each layer keeps. ``targets``: {layer: density} or one global density."""
    sizes = {n: m.weight.numel() for n, m in layers.items()}
    if isinstance(targets, dict):
        unknown = [n for n in targets if n not in layers]
        if unknown:
            raise ConfigError(f"targets name unknown layers {unknown}; choose among {sorted(layers)}.")
        return {n: int(round(_check_density(n, targets.get(n, 1.0)) * sizes[n])) for n in layers}
    d = _check_density("the model", targets)
    if split_rule == "uniform":
        return {n: int(round(d * s)) for n, s in sizes.items()}
    if split_rule != "magnitude":
        raise ConfigError(f"unknown split_rule {split_rule!r}; choose one of {', '.join(SPLIT_RULES)}.")
    return _magnitude_split(layers, d, min_density)


def _magnitude_split(layers: dict[str, nn.Module], d: float, min_density: float) -> dict[str, int]:
    sizes = {n: m.weight.numel() for n, m in layers.items()}
    budget = int(round(d * sum(sizes.values())))
    # A positive floor keeps at least one weight per layer; min_density=0 means no floor at all.
    floors = {n: min(s, max(1, int(round(min_density * s)))) if d > 0 and min_density > 0 else 0
              for n, s in sizes.items()}
    fixed: dict[str, int] = {}
    # Re-rank until no free layer falls under its floor (at most one pass per layer).
    while True:
        free = [n for n in layers if n not in fixed]
        left = budget - sum(fixed.values())
        if not free or left <= 0:
            counts = {n: floors[n] for n in free}  # the floors exceed the budget: floors win
            break
        mags = torch.cat([layers[n].weight.detach().abs().flatten() for n in free])
        left = min(left, mags.numel())
        # Keep the `left` largest magnitudes overall; ties resolved by sort order (stable).
        order = torch.argsort(mags, descending=True, stable=True)[:left]
        owner = torch.cat([torch.full((sizes[n],), i) for i, n in enumerate(free)])
        per = torch.bincount(owner[order], minlength=len(free))
        counts = {n: int(per[i]) for i, n in enumerate(free)}
        under = [n for n in free if counts[n] < floors[n]]
        if not under:
            break
        for n in under:
            fixed[n] = floors[n]
    counts.update(fixed)
    return counts


def density_targets(layers: dict[str, nn.Module], targets: dict[str, float] | float,
                    split_rule: str = "magnitude", min_density: float = 0.01) -> dict[str, float]:
    """Per-layer target densities (``keep_counts`` divided by layer size)."""
    counts = keep_counts(layers, targets, split_rule, min_density)
    return {n: counts[n] / layers[n].weight.numel() for n in layers}
