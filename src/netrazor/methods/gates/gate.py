"""Bernoulli gate modules: ξ ~ Bernoulli(θ) multiplies a structure's output.

One module holds the gates of one structure set: the units of a Linear layer (``UnitGate``),
the filters of a Conv2d (``FilterGate``), the flattened input pixels (``UnitGate`` on the input)
or a whole residual section (``LayerGate``, one gate). θ is an ``nn.Parameter`` kept in [0, 1]
by projection (the gate callback clamps it after every step).

Behaviour:
* training, inside a :class:`~netrazor.methods.gates.sampling.GateSampling` step: the gate asks
  the step's sampler for its values (the estimator decides how many copies and how they relate);
* training outside such a step (e.g. a plain training loop): one Bernoulli sample with the
  straight-through gradient, so the module still trains;
* eval: deterministic ξ = 1[θ ≥ 0.5] (θ rounded), so validation measures the net that the final
  rounding would produce.
Gates marked ``frozen`` (θ was pushed above 1 − τ) are always 1.
"""

from __future__ import annotations

import torch
from torch import nn

KINDS = ("unit", "filter", "input", "layer")


class BernoulliGate(nn.Module):
    """``n`` Bernoulli gates along ``channel_dim`` (dim 1) of the tensor it multiplies.

    Knobs: ``init`` (starting θ, default 0.9 — mostly on, like dropout 0.1), ``per_example``
    (one sample per example instead of one per batch: lower-variance θ gradients at no extra cost).
    """

    def __init__(self, n: int, kind: str = "unit", init: float = 0.9, per_example: bool = True):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"gate kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.per_example = bool(per_example)
        self.theta = nn.Parameter(torch.full((int(n),), float(init)))
        self.register_buffer("frozen", torch.zeros(int(n), dtype=torch.bool))
        self.sampler = None  # set for the duration of one training step by GateSampling

    @property
    def n(self) -> int:
        return int(self.theta.numel())

    def deterministic(self) -> torch.Tensor:
        """ξ in eval: θ rounded (frozen gates are 1)."""
        return ((self.theta.detach() >= 0.5) | self.frozen).to(self.theta.dtype)

    def values(self, rows: int) -> torch.Tensor:
        """Gate values ``[rows or 1, n]`` for a tensor with ``rows`` examples."""
        if not self.training:
            return self.deterministic().unsqueeze(0)
        if bool(self.frozen.all()):  # θ fixed at 1 (e.g. after rounding): a constant, no θ gradient
            return torch.ones((1, self.n), dtype=self.theta.dtype, device=self.theta.device)
        if self.sampler is not None:
            xi = self.sampler.mask(self, rows)
        else:
            shape = (rows if self.per_example else 1, self.n)
            u = torch.rand(shape, device=self.theta.device)
            b = (u < self.theta.detach()).to(self.theta.dtype)
            xi = (self.theta - self.theta.detach()) + b  # straight-through, value exactly b
        if bool(self.frozen.any()):
            xi = torch.where(self.frozen.unsqueeze(0), torch.ones_like(xi), xi)
        return xi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xi = self.values(x.shape[0])
        if self.kind == "layer":
            return x * xi.reshape(xi.shape[0], *([1] * (x.dim() - 1)))
        return x * xi.reshape(xi.shape[0], self.n, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def keep_only(self, keep: torch.Tensor) -> None:
        """Shrink to the gates at indices ``keep`` (after their structures were removed)."""
        self.theta = nn.Parameter(self.theta.detach()[keep].clone())
        self.frozen = self.frozen[keep].clone()

    def extra_repr(self) -> str:
        return f"n={self.n}, kind={self.kind}, per_example={self.per_example}"


class UnitGate(BernoulliGate):
    """Gates on the units of a Linear layer (or on the flattened input pixels: kind="input")."""

    def __init__(self, n: int, init: float = 0.9, per_example: bool = True, kind: str = "unit"):
        super().__init__(n, kind=kind, init=init, per_example=per_example)


class FilterGate(BernoulliGate):
    """Gates on the filters (output channels) of a Conv2d; ξ broadcasts over space."""

    def __init__(self, n: int, init: float = 0.9, per_example: bool = True):
        super().__init__(n, kind="filter", init=init, per_example=per_example)


class LayerGate(BernoulliGate):
    """One gate on a whole residual section: y = shortcut(x) + ξ·branch(x).

    Sampled once per batch (the exact flip-difference estimator wants few, shared samples).
    """

    def __init__(self, init: float = 0.9):
        super().__init__(1, kind="layer", init=init, per_example=False)


def find_gates(model: nn.Module) -> list[tuple[str, BernoulliGate]]:
    """Every gate module in ``model`` with its qualified name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, BernoulliGate)]
