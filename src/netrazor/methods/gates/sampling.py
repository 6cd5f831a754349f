"""One training step's gate samples, shared by every gate of the model.

The objective evaluates the batch ``copies`` times in one stacked forward pass
(``[x; x]`` for the antithetic estimators). Each gate draws its uniform noise once per step
(``[B, n]`` per example or ``[1, n]`` per batch) and asks its estimator for the values of all
copies. After the pass the objective hands the per-example losses back and collects the θ
gradient estimates (:meth:`GateSampling.theta_grads`). ``replay`` re-evaluates copy 0 with
one gate forced to 0 or 1 (the exact flip difference of layer gates).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch

from netrazor.methods.gates.estimators import Estimator
from netrazor.methods.gates.gate import BernoulliGate


class GateSampling:
    def __init__(self, gates: Iterable[BernoulliGate], estimators: dict[str, Estimator], batch: int, copies: int,
                 generator: torch.Generator | None = None):
        self.gates = list(gates)
        self.estimators = estimators  # kind -> estimator
        self.batch = int(batch)
        self.copies = int(copies)
        self.generator = generator
        self.noise: dict[int, torch.Tensor] = {}
        self.replay = False
        self.forced: tuple[BernoulliGate, int, float] | None = None  # (gate, index, value)

    def estimator(self, gate: BernoulliGate) -> Estimator:
        return self.estimators[gate.kind]

    def _noise(self, gate: BernoulliGate) -> torch.Tensor:
        u = self.noise.get(id(gate))
        if u is None:
            rows = self.batch if gate.per_example else 1
            u = torch.rand((rows, gate.n), generator=self.generator).to(gate.theta.device)
            self.noise[id(gate)] = u
        return u

    def mask(self, gate: BernoulliGate, rows: int) -> torch.Tensor:
        u = self._noise(gate)
        est = self.estimator(gate)
        if self.replay:
            xi = est.first(gate.theta.detach(), u)
            if self.forced is not None and self.forced[0] is gate:
                xi = xi.clone()
                xi[:, self.forced[1]] = self.forced[2]
            copies = 1
        else:
            xi = est.mask(gate.theta, u, self.copies)
            copies = self.copies
        if xi.shape[0] == 1:
            return xi  # broadcasts over the batch
        if u.shape[0] == 1 and rows != copies:
            # one sample per batch: spread each copy's row over that copy's examples
            xi = xi.repeat_interleave(rows // copies, dim=0)
        return xi

    @contextmanager
    def active(self) -> Iterator["GateSampling"]:
        for g in self.gates:
            g.sampler = self
        try:
            yield self
        finally:
            for g in self.gates:
                g.sampler = None

    @contextmanager
    def replaying(self, gate: BernoulliGate, index: int, value: float) -> Iterator[None]:
        self.replay, self.forced = True, (gate, index, value)
        try:
            yield
        finally:
            self.replay, self.forced = False, None

    def theta_grads(self, losses: torch.Tensor) -> dict[int, torch.Tensor]:
        """θ-gradient estimates of every non-flip gate from per-example losses ``[copies, B]``."""
        out = {}
        for g in self.gates:
            if g.kind == "layer" and self.estimator(g).name == "flip":
                continue
            est = self.estimator(g)
            if id(g) not in self.noise:  # gate not on the forward path this step
                continue
            grad = est.theta_grad(g.theta, self.noise[id(g)], losses)
            if grad is not None:
                out[id(g)] = grad
        return out
