"""Depth rules: from the data set's entropy statistics and the input geometry to a depth bound.

EBCLE (Gowdra et al., 2021; METHODS.md §1) states [ABS] that a-priori knowledge of the input
data's entropy gives an upper bound on the number of convolutional layers, beyond which identity
transformations prevail. The paper's exact formula is not available to us, so the rule is an
interface (:class:`DepthRule`) with a registry of named rules; the default is our reconstruction
[REC], documented with its calibration in docs/methods/ebcle.md.

Unit of depth: **convolutional layers on the main path** (the paper's unit). For a CIFAR ResNet
that is the stem plus two convs per block (projection shortcuts are not on the main path), for
VGG the number of 3x3 convs. ``netrazor.methods.ebcle.shape`` and the probe use the same unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

from netrazor.errors import ConfigError

# [REC] Calibrated constant of the default rule: conv layers per (entropy ratio x halvings).
# Fitted (least squares through the origin, `python -m benchmarks.ebcle_bench --fit ...`, 8.88)
# on the identity probe's active conv depth (lesion criterion, 0.5 pt) of ResNet-32 trained
# briefly (3 epochs, 10 000 images) on MNIST, Fashion-MNIST and CIFAR-10; the data, the schedule,
# the residuals and why the fit is weak are in docs/methods/ebcle.md ("Calibration").
# Change it with EntropyHalvingsRule(k=...) or `netrazor depth-bound --k`.
DEFAULT_K = 8.9


@runtime_checkable
class DepthRule(Protocol):
    """``max_depth(stats, input_hw, **kw) -> int``: an upper bound on main-path conv layers.

    ``stats`` is :func:`netrazor.data.entropy.dataset_entropy` output (bits, ``max_bits`` = 8),
    ``input_hw`` the input's (height, width).
    """

    def max_depth(self, stats: dict, input_hw: tuple[int, int], **kw: Any) -> int: ...


def entropy_ratio(stats: dict, statistic: str = "mean") -> float:
    """h = H / H_max in [0, 1], H the chosen statistic of the per-image entropies (bits).

    ``statistic``: "mean" (default), "pooled" (entropy of the pooled histogram), "median", or a
    percentile key such as "p95" (a more conservative bound).
    """
    if statistic in ("mean", "pooled", "max", "min"):
        value = stats.get(statistic)
    elif statistic == "median":
        value = stats.get("percentiles", {}).get("p50")
    else:
        value = stats.get("percentiles", {}).get(statistic)
    if value is None:
        raise ConfigError(
            f"entropy statistics have no {statistic!r}; use 'mean', 'pooled', 'median' or a percentile "
            f"such as 'p95' from netrazor.data.entropy.dataset_entropy."
        )
    max_bits = float(stats.get("max_bits", 8.0))
    return min(1.0, max(0.0, float(value) / max_bits))


def halvings(input_hw: tuple[int, int]) -> float:
    """log2 of the smaller input side: how many times the input can halve in resolution."""
    side = min(int(input_hw[0]), int(input_hw[1]))
    if side < 1:
        raise ConfigError(f"input size must be positive, got {tuple(input_hw)}; pass the image (H, W).")
    return math.log2(side)


@dataclass(frozen=True)
class EntropyHalvingsRule:
    """Default rule [REC]: ``L_max = max(min_depth, round(k * h * log2(min(H, W))))``.

    h = H/8 is the entropy ratio of the chosen ``statistic``; log2 of the side is the number of
    resolution halvings the input allows. The bound grows with both: more information per image
    and more room to abstract it spatially justify more layers. Knobs: ``k`` (calibrated, see
    :data:`DEFAULT_K`), ``statistic``, ``min_depth`` (floor, at least one conv).
    Limits: one constant fitted on three data sets of 28-32 px; not validated on larger inputs.
    """

    k: float = DEFAULT_K
    statistic: str = "mean"
    min_depth: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.k, (int, float)) and math.isfinite(self.k) and self.k > 0):
            raise ConfigError(f"EntropyHalvingsRule.k must be a positive number, got {self.k!r}.")
        if not isinstance(self.min_depth, int) or self.min_depth < 1:
            raise ConfigError(f"EntropyHalvingsRule.min_depth must be an int >= 1, got {self.min_depth!r}.")

    def raw(self, stats: dict, input_hw: tuple[int, int]) -> float:
        """The unrounded bound ``k * h * log2(side)`` (for tables and calibration)."""
        return self.k * entropy_ratio(stats, self.statistic) * halvings(input_hw)

    def max_depth(self, stats: dict, input_hw: tuple[int, int], **kw: Any) -> int:
        return max(self.min_depth, int(math.floor(self.raw(stats, input_hw) + 0.5)))


@dataclass(frozen=True)
class FixedDepthRule:
    """A constant bound (ignores the data): for ablations and for users who know their depth."""

    depth: int = 8

    def max_depth(self, stats: dict, input_hw: tuple[int, int], **kw: Any) -> int:
        return int(self.depth)


RULES: dict[str, Callable[..., DepthRule]] = {
    "entropy-halvings": EntropyHalvingsRule,
    "fixed": FixedDepthRule,
}
DEFAULT_RULE = "entropy-halvings"


def register_rule(name: str, factory: Callable[..., DepthRule]) -> None:
    """Make a rule available by name (e.g. the paper's exact rule, once known)."""
    RULES[str(name)] = factory


def get_rule(name: str | DepthRule | None = None, **kw: Any) -> DepthRule:
    """A rule instance by registry name (``None`` = the default); an instance passes through."""
    if name is None:
        name = DEFAULT_RULE
    if not isinstance(name, str):
        if isinstance(name, DepthRule):
            return name
        raise ConfigError(f"a depth rule is a name or an object with max_depth(), got {name!r}.")
    if name not in RULES:
        raise ConfigError(f"unknown depth rule {name!r}; choose one of {', '.join(sorted(RULES))}.")
    try:
        return RULES[name](**kw)
    except TypeError as exc:
        raise ConfigError(f"bad options {kw} for depth rule {name!r}: {exc}; see its docstring.") from exc
