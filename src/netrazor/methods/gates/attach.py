"""Attach Bernoulli gates to any traceable model, shrink it during training, fold them away.

``attach_gates`` finds the structure sets (:mod:`.structures`), creates one gate module per set
and installs forward hooks (forward *pre*-hooks for input-pixel gates) on the host modules. The
gate modules are held by the returned :class:`GateSet`, outside the model's module tree, so the
model keeps its class, its names and its parameter list (the trainer's optimiser never sees θ;
the gate callback steps θ with its own optimiser), and the final model is a plain network.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from netrazor.errors import ConfigError, ModelError
from netrazor.methods.gates.gate import BernoulliGate, FilterGate, LayerGate, UnitGate
from netrazor.methods.gates.structures import (
    InputSelectLinear,
    Structure,
    WeightLayer,
    ZeroBranch,
    find_structures,
    get_module,
    remove_channels_local,
    set_module,
)

log = logging.getLogger(__name__)


class _OutputHook:
    """Forward hook: multiply the host's output by its gate (gate follows the host's train/eval)."""

    def __init__(self, gate: BernoulliGate):
        self.gate = gate

    def __call__(self, module, inputs, output):
        self.gate.train(module.training)
        return self.gate(output)


class _FeatureGateHandle:
    """Installs a gate on the kept input features of an InputSelectLinear (undone by ``remove``)."""

    def __init__(self, host: InputSelectLinear, gate: BernoulliGate):
        self.host = host
        host.__dict__["_feature_gate"] = gate  # a plain attribute: the gate stays out of the module tree

    def remove(self) -> None:
        self.host.__dict__.pop("_feature_gate", None)


class GateSet:
    """The gates of one model: structure records, gate modules, hooks, and removal.

    Attributes: ``model``, ``structures`` (name -> Structure), ``gates`` (name -> gate),
    ``weight_layers`` (for the cost model), ``kept`` (name -> original indices still present).
    """

    def __init__(self, model: nn.Module, structures: list[Structure], weight_layers: list[WeightLayer],
                 init: float, per_example: bool):
        self.model = model
        self.structures = {s.name: s for s in structures}
        self.weight_layers = weight_layers
        self.gates: dict[str, BernoulliGate] = {}
        self.kept: dict[str, torch.Tensor] = {}
        self._handles: dict[str, object] = {}
        self.index_maps: dict[str, list] = {}  # cuts since the last optimiser rebuild
        self.removed_sections: list[str] = []  # layer sets whose branch is now a ZeroBranch
        self.idle_rectifiers: list[str] = []  # ReLUs made the identity by those removals (finalize)
        device = next(model.parameters()).device
        for s in structures:  # swap in pixel-selecting first layers before any hook is installed on them
            if s.kind == "input" and not isinstance(get_module(model, s.host), InputSelectLinear):
                set_module(model, s.host, _to_input_select(get_module(model, s.host)))
        for s in structures:
            if s.kind == "layer":
                gate: BernoulliGate = LayerGate(init=init)
            elif s.kind == "filter":
                gate = FilterGate(s.width_dense, init=init, per_example=per_example)
            else:
                gate = UnitGate(s.width_dense, init=init, per_example=per_example, kind=s.kind)
            gate.to(device)
            self.gates[s.name] = gate
            self.kept[s.name] = torch.arange(s.width_dense)
            host = get_module(model, s.host)
            if s.kind == "input":
                self._handles[s.name] = _FeatureGateHandle(host, gate)
            else:
                self._handles[s.name] = host.register_forward_hook(_OutputHook(gate))

    # --- views ------------------------------------------------------------------------------------
    def gate_list(self) -> list[BernoulliGate]:
        return list(self.gates.values())

    def thetas(self) -> list[nn.Parameter]:
        return [g.theta for g in self.gates.values()]

    def widths(self) -> dict[str, int]:
        return {name: g.n for name, g in self.gates.items()}

    def effective_theta(self, name: str) -> torch.Tensor:
        g = self.gates[name]
        if bool(g.frozen.all()):
            return torch.ones_like(g.theta)  # no θ gradient once the whole set is fixed
        return torch.where(g.frozen, torch.ones_like(g.theta), g.theta)

    # --- physical change --------------------------------------------------------------------------
    def remove(self, name: str, drop: torch.Tensor) -> int:
        """Remove the structures ``drop`` (indices into the current width) of set ``name`` for good.

        Returns how many were removed. A unit/filter/input set always keeps at least one member,
        so the network never disconnects; a layer set is removed by zeroing its branch.
        """
        s, gate = self.structures[name], self.gates[name]
        mask = torch.ones(gate.n, dtype=torch.bool)
        mask[drop.cpu()] = False
        if s.kind == "layer":
            if mask.all():
                return 0
            self._handles.pop(name).remove()
            set_module(self.model, s.host, ZeroBranch())
            for member in s.members:  # everything inside the section is gone with it
                for other in [o for o in self.structures.values() if o.producer == member]:
                    self._drop_set(other.name)
            self.weight_layers = [w for w in self.weight_layers if w.section != name]
            self._drop_set(name)
            self.removed_sections.append(name)
            return 1
        if not mask.any():
            mask[int(torch.argmax(gate.theta.detach().cpu()))] = True
        removed = int((~mask).sum())
        if removed == 0:
            return 0
        keep = torch.nonzero(mask).flatten()
        for pname, cuts in remove_channels_local(self.model, s, keep.to(gate.theta.device)).items():
            self.index_maps.setdefault(pname, []).extend(cuts)
        gate.keep_only(keep.to(gate.theta.device))
        self.kept[name] = self.kept[name][keep]
        return removed

    def pop_index_maps(self) -> dict[str, list]:
        """The parameter cuts since the last call (for ``Trainer.rebuild_optimizer(index_maps=...)``)."""
        maps, self.index_maps = self.index_maps, {}
        return maps

    def _drop_set(self, name: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.remove()
        self.structures.pop(name, None)
        self.gates.pop(name, None)

    def prune_below(self, tau: float) -> int:
        """Remove every structure with θ < τ; returns the number removed."""
        total = 0
        for name in list(self.gates):
            if name not in self.gates:
                continue  # dropped with its section
            g = self.gates[name]
            drop = torch.nonzero((g.theta.detach() < tau) & ~g.frozen).flatten()
            if drop.numel():
                total += self.remove(name, drop)
        return total

    @torch.no_grad()
    def freeze_above(self, tau: float) -> int:
        """Freeze θ > 1 − τ to 1 (always on, no more sampling); returns how many were frozen."""
        count = 0
        for g in self.gates.values():
            new = (g.theta > 1.0 - tau) & ~g.frozen
            count += int(new.sum())
            g.frozen |= new
            g.theta[g.frozen] = 1.0
        return count

    @torch.no_grad()
    def project(self) -> None:
        """Projected SGD: clamp θ into [0, 1]; frozen gates stay at 1."""
        for g in self.gates.values():
            g.theta.clamp_(0.0, 1.0)
            g.theta[g.frozen] = 1.0

    def round(self) -> int:
        """Round θ: remove the structures whose rounded gate is 0 and freeze the others at 1.

        Afterwards the gated model is deterministic in training too; returns how many were removed.
        """
        total = 0
        for name in list(self.gates):
            if name not in self.gates:
                continue  # dropped with its section
            g = self.gates[name]
            drop = torch.nonzero(g.deterministic() < 0.5).flatten()
            if drop.numel():
                total += self.remove(name, drop)
        with torch.no_grad():
            for g in self.gates.values():
                g.frozen.fill_(True)
                g.theta.fill_(1.0)
        return total

    def finalize(self) -> nn.Module:
        """Round θ, remove the structures whose rounded gate is 0, take every gate and hook away.

        The result is a plain, deterministic, physically smaller network whose eval outputs equal
        the gated model's eval outputs (eval gates are already θ rounded). When residual sections
        were removed, the rectifiers that became the identity (a ReLU after ``x + 0`` on a
        non-negative x) are replaced by ``nn.Identity`` too (exact; :mod:`.sections`).
        """
        self.round()
        for name in list(self.gates):
            self._drop_set(name)
        if self.removed_sections:
            from netrazor.methods.gates.sections import drop_idle_rectifiers

            self.idle_rectifiers = drop_idle_rectifiers(self.model)
        for name, module in list(self.model.named_modules()):
            if isinstance(module, InputSelectLinear) and module.input_index.numel() == module.in_features \
                    and bool((module.input_index == torch.arange(module.in_features, device=module.input_index.device)).all()):
                set_module(self.model, name, _to_plain_linear(module))
        return self.model

    def summary(self) -> dict:
        return {name: {"kind": self.structures[name].kind, "width_dense": self.structures[name].width_dense,
                       "width": g.n} for name, g in self.gates.items()}


def _to_input_select(lin: nn.Module) -> InputSelectLinear:
    if not isinstance(lin, nn.Linear):
        raise ModelError(f"input gates need a Linear first layer, got {type(lin).__name__}; set inputs=False.")
    new = InputSelectLinear(lin.in_features, lin.out_features, bias=lin.bias is not None)
    new.to(lin.weight.device)
    with torch.no_grad():
        new.weight.copy_(lin.weight)
        if lin.bias is not None:
            new.bias.copy_(lin.bias)
    new.train(lin.training)
    return new


def _to_plain_linear(lin: InputSelectLinear) -> nn.Linear:
    new = nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None).to(lin.weight.device)
    with torch.no_grad():
        new.weight.copy_(lin.weight)
        if lin.bias is not None:
            new.bias.copy_(lin.bias)
    return new


def attach_gates(model: nn.Module, example_input: torch.Tensor, units: bool = True, filters: bool = True,
                 layers: bool = True, inputs: bool = False, init: float = 0.9, per_example: bool = True) -> GateSet:
    """Gate every prunable structure of ``model`` (in place) and return the :class:`GateSet`.

    ``units``: Linear hidden units; ``filters``: Conv2d filters; ``layers``: residual sections
    (modules with ``branch`` and ``shortcut``); ``inputs``: the flattened input features of an MLP
    (LeNet-300-100's pixels). ``init``: starting θ; ``per_example``: one sample per example.
    """
    if not 0.0 < init <= 1.0:
        raise ConfigError(f"init θ must be in (0, 1], got {init}; 0.9 is the default.")
    structures, weight_layers = find_structures(model, example_input, units=units, filters=filters,
                                                layers=layers, inputs=inputs)
    if not structures:
        raise ModelError(
            f"found no gateable structure in {type(model).__name__}: gates need Linear/Conv2d layers that feed "
            "other Linear/Conv2d layers through channel-wise ops (or residual sections with branch/shortcut)."
        )
    log.info("gating %d structure sets: %s", len(structures), ", ".join(s.name for s in structures))
    return GateSet(model, structures, weight_layers, init=init, per_example=per_example)
