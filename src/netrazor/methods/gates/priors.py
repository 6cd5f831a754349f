"""Weight prior and hyper-priors of the gate objective (strategy objects).

Weight prior [REC]: a Gaussian on the weights of a *present* structure, nothing on an absent one,
so its expectation under the gates is Σ_g θ_g (λ/2)‖w_g‖² (w_g: the incoming weights and bias
of unit/filter g; for an input pixel, its column of the first layer). λ is in loss units per
example, like weight decay. Its θ-gradient makes a structure with large weights pay more.

Hyper-prior [REC]: the paper derives a hyper-prior over the prior parameters that makes θ
converge to 0 or 1; its form is not available to us. Our default, :class:`VertexPrior`, adds
Σ_g γ_g(t)·θ_g(1 − θ_g), whose gradient γ_g(1 − 2θ_g) pushes θ_g toward its nearer vertex.
γ_g(t) = η(t)·s_g is *self-scaled*: s_g is the (detached) gradient of the κ-weighted cost with
respect to θ_g, and η(t) ramps from 0 (start of ``ramp``) to ``strength`` (end of ``ramp``);
progress is measured in the gating phase (before θ is rounded). GatesMethod's defaults (session 3):
ramp (0.1, 1.0), strength 1.5 (the classes below keep session 2's (0.5, 1.0) and 2.0).
Why: a structure the data does not need feels the cost s_g; as long as η < 1 the hyper-prior can
never hold it at 1, but it breaks the ties of structures whose data value balances their cost
(the "many half-open units" ensemble) toward 0 or 1. Once η > 1 (the last 40 % of the gating
phase with the defaults) it locks every gate at its nearer vertex, so θ has converged when it is
rounded. The ramp's start sets how long the log cost (whose pressure grows as the net shrinks)
acts unopposed: session 2's late ramp (0.5, 1.0) let it take LeNet-300-100 to 97 % removed at
2.85 % test error; with the cost on parameters only (``flops_vs_params=0``) the early ramp no
longer leaves LeNet-5's fc1 wide (docs/methods/gates.md). No per-model constant is involved.
:class:`EntropyPrior` uses the Bernoulli entropy instead. Any object with
``__call__(theta: Tensor, progress: float, scale: Tensor | None) -> Tensor`` can replace them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from netrazor.errors import ConfigError
from netrazor.methods.gates.attach import GateSet
from netrazor.methods.gates.structures import get_module


def _ramp(progress: float, start: float, end: float) -> float:
    if progress <= start:
        return 0.0
    if progress >= end or end <= start:
        return 1.0
    return (progress - start) / (end - start)


@dataclass
class VertexPrior:
    """η(t) Σ s_g θ_g(1−θ_g); knobs: ``strength`` (η at the end of the ramp), ``ramp`` (fractions of training)."""

    strength: float = 2.0
    ramp: tuple[float, float] = (0.5, 1.0)

    def __call__(self, theta: torch.Tensor, progress: float, scale: torch.Tensor | None = None) -> torch.Tensor:
        g = self.strength * _ramp(progress, *self.ramp)
        per_gate = theta * (1.0 - theta)
        return g * (per_gate if scale is None else per_gate * scale).sum()


@dataclass
class EntropyPrior:
    """η(t) Σ s_g H(Bernoulli(θ_g)) / 4 (nats; /4 matches θ(1−θ)'s slope at the vertices' midpoint)."""

    strength: float = 2.0
    ramp: tuple[float, float] = (0.5, 1.0)

    def __call__(self, theta: torch.Tensor, progress: float, scale: torch.Tensor | None = None) -> torch.Tensor:
        g = self.strength * _ramp(progress, *self.ramp)
        t = theta.clamp(1e-6, 1 - 1e-6)
        h = -(t * t.log() + (1 - t) * (1 - t).log()) / 4.0
        return g * (h if scale is None else h * scale).sum()


HYPER_PRIORS = {"vertex": VertexPrior, "entropy": EntropyPrior}


def get_hyper_prior(name, strength: float = 2.0, ramp: tuple[float, float] = (0.5, 1.0)):
    if callable(name) and not isinstance(name, str):
        return name
    try:
        return HYPER_PRIORS[str(name)](strength=strength, ramp=tuple(ramp))
    except KeyError:
        raise ConfigError(f"unknown hyper-prior {name!r}; choose one of: {', '.join(HYPER_PRIORS)}.") from None


def weight_prior(gs: GateSet, lam: float) -> torch.Tensor:
    """Σ_g θ_g (λ/2)‖w_g‖² over unit, filter and input gates (differentiable in θ and w)."""
    total = torch.zeros(())
    if lam == 0.0:
        return total
    for name, gate in gs.gates.items():
        s = gs.structures[name]
        theta = gs.effective_theta(name)
        if s.kind in ("unit", "filter") and s.producer is not None:
            prod = get_module(gs.model, s.producer)
            sq = prod.weight.pow(2).flatten(1).sum(1)
            if prod.bias is not None:
                sq = sq + prod.bias.pow(2)
        elif s.kind == "input":
            sq = get_module(gs.model, s.host).weight.pow(2).sum(0)
        else:
            continue
        total = total + (theta * sq).sum() * (lam / 2.0)
    return total
