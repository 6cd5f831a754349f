"""Gradient estimators for the Bernoulli probabilities θ of the gates (strategy objects).

The training loss is multilinear in the gate values ξ (each ξ_g ∈ {0, 1} multiplies one
structure), so ∂E[f]/∂θ_g = E[f(ξ | ξ_g=1) − f(ξ | ξ_g=0)] (METHODS.md §2). Sampling every
flip is too expensive for thousands of unit gates, so unit/filter gates use antithetic
estimators that need two forward passes per step (the batch is evaluated twice, stacked):

* :class:`DisARM` (default; Dong, Mnih & Tucker 2020, "DisARM: An Antithetic Gradient Estimator
  for Binary Latent Variables") — unbiased, lower variance than ARM.
* :class:`ARM` (Yin & Zhou 2019, "ARM: Augment-REINFORCE-Merge Gradient Estimator") — unbiased.
* :class:`StraightThrough` — one pass, ∂ξ/∂θ := 1 (Bengio et al. 2013); cheap and biased.
* :class:`FlipDifference` — the exact flip difference, for the few layer gates (extra no-grad
  passes with the gate forced to 1 and 0, everything else as sampled).

Both antithetic estimators share one pair of samples from a uniform u: b = 1[u < θ] and
b̃ = 1[1 − u < θ]. The papers give the estimators for logits α (θ = σ(α)); we keep θ itself as
the parameter (projected SGD on [0, 1], as the follow-up papers do), so the logit gradient is
divided by dθ/dα = θ(1 − θ). Per-example samples (one u per example and gate) are averaged over
the batch, which divides the variance by the batch size — the local-reparameterisation idea.

Interface used by :mod:`netrazor.methods.gates.sampling`:
  ``copies``                         forward copies of the batch the estimator needs
  ``mask(theta, u, copies)``         gate values for all copies, ``[copies * rows, n]``
  ``first(theta, u)``                the sample of copy 0 (used to replay it)
  ``theta_grad(theta, u, losses)``   ``losses`` is ``[copies, B]`` (detached per-example
                                     losses); returns the estimate of ∂E[mean loss]/∂θ, ``[n]``,
                                     or ``None`` when autograd already carries it (straight-through)
"""

from __future__ import annotations

import torch

from netrazor.errors import ConfigError

_EPS = 1e-6


def _check_rows(u: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """Per-example loss differences aligned with the rows of u (1 row: shared by the batch)."""
    diff = (losses[0] - losses[1]).unsqueeze(1)  # [B, 1]: f(b) - f(b~)
    if u.shape[0] not in (1, diff.shape[0]):
        raise ConfigError(f"gate noise has {u.shape[0]} rows but the batch has {diff.shape[0]} examples.")
    return diff


class Estimator:
    """Base strategy; see the module docstring for the interface."""

    name = "base"
    copies = 1

    def first(self, theta: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return (u < theta).to(theta.dtype)

    def mask(self, theta: torch.Tensor, u: torch.Tensor, copies: int) -> torch.Tensor:
        b = self.first(theta, u)
        return b.repeat(copies, 1) if copies > 1 else b

    def theta_grad(self, theta: torch.Tensor, u: torch.Tensor, losses: torch.Tensor) -> torch.Tensor | None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _Antithetic(Estimator):
    copies = 2

    def mask(self, theta: torch.Tensor, u: torch.Tensor, copies: int) -> torch.Tensor:
        if copies != 2:
            raise ConfigError(f"{self.name} needs 2 forward copies of the batch, got {copies}.")
        theta = theta.detach()
        b = (u < theta).to(theta.dtype)
        b_anti = (1.0 - u < theta).to(theta.dtype)
        return torch.cat([b, b_anti], dim=0)


class DisARM(_Antithetic):
    """DisARM in the θ parameterisation (unbiased; default for unit and filter gates).

    Logit form (Dong et al. 2020): ĝ_α = ½ (f(b) − f(b̃)) (−1)^{b̃} 1[b ≠ b̃] σ(|α|).
    With σ(|α|) = max(θ, 1−θ) and dθ/dα = θ(1−θ): ĝ_θ = ½ (f(b) − f(b̃)) (−1)^{b̃} 1[b ≠ b̃] / min(θ, 1−θ).
    """

    name = "disarm"

    def theta_grad(self, theta, u, losses):
        theta = theta.detach()
        diff = _check_rows(u, losses)
        b = u < theta
        b_anti = (1.0 - u) < theta
        sign = 1.0 - 2.0 * b_anti.to(theta.dtype)  # (-1)^{b~}
        coef = (b != b_anti).to(theta.dtype) * sign / (2.0 * torch.minimum(theta, 1.0 - theta).clamp_min(_EPS))
        return (diff * coef).mean(dim=0)


class ARM(_Antithetic):
    """ARM in the θ parameterisation (unbiased, higher variance than DisARM).

    Logit form (Yin & Zhou 2019): ĝ_α = (f(1[u > 1−θ]) − f(1[u < θ])) (u − ½); divided by θ(1−θ).
    """

    name = "arm"

    def theta_grad(self, theta, u, losses):
        theta = theta.detach()
        diff = _check_rows(u, losses)  # f(b) - f(b~); ARM wants f(b~) - f(b)
        coef = (u - 0.5) / (theta * (1.0 - theta)).clamp_min(_EPS)
        return (-diff * coef).mean(dim=0)


class StraightThrough(Estimator):
    """Forward: a Bernoulli sample; backward: ∂ξ/∂θ = 1. One pass, biased, cheap."""

    name = "straight-through"
    copies = 1

    def mask(self, theta, u, copies):
        b = (u < theta.detach()).to(theta.dtype)
        xi = (theta - theta.detach()) + b  # value exactly b (θ−θ = 0 first), gradient 1 w.r.t. θ
        return xi.repeat(copies, 1) if copies > 1 else xi


class FlipDifference(Estimator):
    """Exact flip difference E[f(ξ|ξ_g=1) − f(ξ|ξ_g=0)], one sample of the other gates per step.

    Costs two extra no-grad forward passes per gate, so it is meant for the few layer gates.
    Within the main pass the gate is sampled once and repeated over the copies (so antithetic
    unit estimators see the same layer sample in both copies). The flip passes are run by
    :class:`netrazor.methods.gates.objective.GateObjective`, which calls :meth:`from_flips`.
    """

    name = "flip"
    copies = 1

    @staticmethod
    def from_flips(loss_on: torch.Tensor, loss_off: torch.Tensor) -> torch.Tensor:
        return (loss_on - loss_off).mean().reshape(1)


ESTIMATORS = {
    "disarm": DisARM,
    "arm": ARM,
    "straight-through": StraightThrough,
    "st": StraightThrough,
    "flip": FlipDifference,
}


def get_estimator(name: str | Estimator) -> Estimator:
    """An estimator from its name ("disarm", "arm", "straight-through"/"st", "flip") or an instance."""
    if isinstance(name, Estimator):
        return name
    try:
        return ESTIMATORS[str(name).lower()]()
    except KeyError:
        raise ConfigError(
            f"unknown gate estimator {name!r}; choose one of: {', '.join(sorted(ESTIMATORS))}."
        ) from None
