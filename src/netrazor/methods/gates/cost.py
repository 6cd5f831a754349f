"""Expected complexity of a gated network, multilinear in θ (the complexity-aware cost).

For a weight layer with kernel size k (elements per input/output channel pair), output
positions P, expected live inputs S_in = m·Σ θ_in (m positions per input channel after a
flatten) and expected live outputs S_out = Σ θ_out, and enclosing layer gate θ_L (1 if none):

    E[params] = θ_L · (k·S_in·S_out + (bias + norm) · S_out)
    E[MACs]   = θ_L ·  P·k·S_in·S_out

This is exact for independent gates: a weight (o, i) exists iff ξ_o ξ_i ξ_L = 1, and
Σ_{o,i} θ_o θ_i = (Σ θ_o)(Σ θ_i). Ungated sides count their current physical width.

[REC] The cost the objective adds is κ · ((1−ρ)·E[params]/params_dense + ρ·E[MACs]/MACs_dense),
ρ = ``flops_vs_params``: normalised by the dense network, so κ means "loss units per whole
network" and needs no per-model rescaling. The ``layer_vs_unit`` knob ν scales the cost gradient
reaching layer gates by 2ν and unit/filter gates by 2(1−ν) (ν = ½: neutral).
"""

from __future__ import annotations

import torch
from torch import nn

from netrazor.methods.gates.attach import GateSet
from netrazor.methods.gates.structures import get_module


def _scale_grad(t: torch.Tensor, scale: float) -> torch.Tensor:
    """Value ``t``, gradient multiplied by ``scale``."""
    if scale == 1.0:
        return t
    return t * scale + (t * (1.0 - scale)).detach()


def _width(module: nn.Module, side: str) -> int:
    if isinstance(module, nn.Conv2d):
        return module.in_channels if side == "in" else module.out_channels
    return module.in_features if side == "in" else module.out_features


def expected_cost(gs: GateSet, layer_vs_unit: float = 0.5, ones: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E[params], E[MACs])`` of the gated weight layers, differentiable in θ.

    ``ones=True`` gives the cost of the current physical network with every gate on.
    """
    thetas: dict[str, torch.Tensor] = {}
    for name in gs.gates:
        kind = gs.structures[name].kind
        scale = 2.0 * layer_vs_unit if kind == "layer" else 2.0 * (1.0 - layer_vs_unit)
        th = gs.effective_theta(name)
        thetas[name] = torch.ones_like(th) if ones else _scale_grad(th, scale)
    params = torch.zeros(())
    macs = torch.zeros(())
    for wl in gs.weight_layers:
        module = get_module(gs.model, wl.name)
        if wl.in_struct is not None and wl.in_struct in thetas:
            s_in = thetas[wl.in_struct].sum() * wl.in_mult
        else:
            s_in = torch.tensor(float(_width(module, "in")))
        if wl.out_struct is not None and wl.out_struct in thetas:
            s_out = thetas[wl.out_struct].sum()
        else:
            s_out = torch.tensor(float(_width(module, "out")))
        section = thetas[wl.section].sum() if wl.section is not None and wl.section in thetas else 1.0
        s_in, s_out = s_in.to(params.device), s_out.to(params.device)
        pair = wl.kernel * s_in * s_out
        params = params + section * (pair + (int(wl.has_bias) + wl.norm_params) * s_out)
        macs = macs + section * wl.out_spatial * pair
    return params, macs


class CostModel:
    """κ-weighted normalised expected cost (see module docstring); remembers the dense reference.

    ``reference`` [REC]:
    "log" (default, *self-scaled*) adds κ·((1−ρ)·log(E[params]/params_dense) + ρ·log(E[MACs]/MACs_dense)):
    the θ-gradient of a structure is κ times the *share of the current expected network* it
    costs, so the pressure on each survivor grows as the net shrinks (a linear cost fades late
    in training: an fc1 unit of a LeNet-5 whose convs were cut is ~1e-4 of the dense net but
    ~1 % of the net that is left), and the equilibrium ("a structure stays iff its data value
    exceeds κ × its share of the final net") does not mention the starting width — the property
    the robustness claim (same size from ×1 and ×2 starts) needs. κ = nats per e-fold of cost.
    "dense" divides by the starting network's params/MACs (κ = loss units per whole starting
    network; the kept *fraction* is what stays stable across starting widths);
    "data" divides both by ``n_train`` like the KL/N term of an ELBO (κ = nats per parameter or
    MAC per training example; the kept *absolute size* does not depend on the starting width).
    """

    def __init__(self, gs: GateSet, kappa: float = 1.0, flops_vs_params: float = 0.5, layer_vs_unit: float = 0.5,
                 reference: str = "dense", n_train: int | None = None):
        self.gs, self.kappa, self.rho, self.nu = gs, float(kappa), float(flops_vs_params), float(layer_vs_unit)
        with torch.no_grad():
            p, m = expected_cost(gs, ones=True)
        self.params_dense, self.macs_dense = float(p), max(float(m), 1.0)
        self.log = reference == "log"
        if reference in ("dense", "log"):
            self.params_ref, self.macs_ref = self.params_dense, self.macs_dense
        elif reference == "data" and n_train:
            self.params_ref = self.macs_ref = float(n_train)
        else:
            raise ValueError(f"cost reference must be 'log', 'dense' or 'data' (with n_train), got {reference!r}")

    def fraction(self) -> torch.Tensor:
        """Expected cost relative to the dense network (for logs), whatever the reference."""
        p, m = expected_cost(self.gs, self.nu)
        return (1.0 - self.rho) * p / self.params_dense + self.rho * m / self.macs_dense

    def normalised(self) -> torch.Tensor:
        p, m = expected_cost(self.gs, self.nu)
        if self.log:  # ≤ 0; one parameter / MAC floor keeps the log finite
            return ((1.0 - self.rho) * torch.log(p.clamp_min(1.0) / self.params_ref)
                    + self.rho * torch.log(m.clamp_min(1.0) / self.macs_ref))
        return (1.0 - self.rho) * p / self.params_ref + self.rho * m / self.macs_ref

    def __call__(self) -> torch.Tensor:
        return self.kappa * self.normalised()
