"""Finding the prunable structures of any traceable model, and removing them physically.

A *structure set* is the output channels of one Linear/Conv2d (units / filters) whose every
path leads, through channel-wise, zero-preserving operations only (BatchNorm, ReLU-family
activations, pooling, dropout, flatten), into other Linear/Conv2d layers. Removing channel c
then means: drop row c of the producer (and of its BatchNorms), and drop the matching input
columns of every consumer (c·m … c·m+m−1 after a flatten with m positions per channel). The
classifier (its output reaches the model output) and layers feeding a residual addition are not
structure sets here: their channels are coupled and need the surgery layer's dependency groups.

[REC] This is the "simplest safe rule" of the gates issue, used until
``netrazor.surgery.prunable_groups`` covers coupled channels; it works on any ``torch.fx``
traceable model, not only the zoo. Layer structures are the zoo's residual sections: a module
with children ``branch`` and ``shortcut`` computing ``f(shortcut(x) + branch(x))``
(docs/models.md); removing one replaces ``branch`` by :class:`ZeroBranch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from netrazor.errors import ModelError

_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Mish,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten,
)
_PASS_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, torch.tanh, F.hardtanh, F.hardswish,
    F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.dropout, torch.flatten,
}
_PASS_METHODS = {"relu", "relu_", "flatten", "view", "reshape", "tanh", "contiguous"}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


class ZeroBranch(nn.Module):
    """A removed residual branch: contributes exactly 0 (broadcasts in ``shortcut(x) + 0``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(())


class InputSelectLinear(nn.Linear):
    """A Linear layer that first keeps the input features listed in ``input_index``.

    What remains of the first layer of an MLP once input pixels are gated away: the weight has
    one column per *kept* pixel, and the buffer says which ones.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, total_inputs: int | None = None):
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("input_index", torch.arange(in_features if total_inputs is None else total_inputs)[:in_features])

    def linear_input(self, x: torch.Tensor) -> torch.Tensor:
        """The features the weight multiplies (evolution's delta evaluator gathers these)."""
        x = x.index_select(-1, self.input_index)
        gate = self.__dict__.get("_feature_gate")  # set by the gates method; not a child module
        if gate is not None:
            gate.train(self.training)
            x = gate(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.linear_input(x), self.weight, self.bias)


@dataclass
class Consumer:
    name: str
    multiplicity: int = 1  # input features per channel (flatten of C×H×W: H·W)


@dataclass
class Structure:
    """One gated structure set. ``kind``: unit | filter | input | layer."""

    name: str
    kind: str
    host: str  # module whose output (or input, for "input") the gate multiplies
    producer: str | None = None
    norms: list[str] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)
    width_dense: int = 0
    members: list[str] = field(default_factory=list)  # layer kind: weight layers inside the section


@dataclass
class WeightLayer:
    """A Linear/Conv2d with what its expected cost depends on."""

    name: str
    kernel: int  # weight elements per (input channel, output channel) pair
    out_spatial: int  # output positions per example (H·W for conv, 1 for linear)
    has_bias: bool
    norm_params: int  # per output channel (2 per BatchNorm)
    in_struct: str | None = None
    in_mult: int = 1
    out_struct: str | None = None
    section: str | None = None


def get_module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name) if name else model


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(get_module(model, parent), child, module)


def _is_weight_layer(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)


def trace(model: nn.Module, example_input: torch.Tensor) -> torch.fx.GraphModule:
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for data-dependent control flow
        raise ModelError(
            f"cannot trace {type(model).__name__} with torch.fx ({exc}); gates need a traceable model — "
            "move data-dependent control flow out of forward() or gate the layers by hand with UnitGate/FilterGate."
        ) from exc
    was_training = model.training
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(example_input)
    model.train(was_training)
    return gm


def _shape(node: torch.fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


class _Walk:
    """Follows one producer's channels to their consumers; fails on anything not channel-wise."""

    def __init__(self, gm: torch.fx.GraphModule, channels: int):
        self.gm, self.channels = gm, channels
        self.modules = dict(gm.named_modules())
        self.norms: list[str] = []
        self.consumers: list[Consumer] = []

    def follow(self, node: torch.fx.Node) -> bool:
        if not node.users:
            return False
        for user in node.users:
            if not self._step(node, user):
                return False
        return True

    def _step(self, node: torch.fx.Node, user: torch.fx.Node) -> bool:
        if user.op == "output":
            return False
        if user.op == "call_module":
            mod = self.modules[user.target]
            if _is_weight_layer(mod) and user.args and user.args[0] is node:
                fan_in = mod.in_features if isinstance(mod, nn.Linear) else mod.in_channels
                if fan_in % self.channels:
                    return False
                mult = fan_in // self.channels
                if isinstance(mod, nn.Conv2d) and mult != 1:
                    return False
                if isinstance(mod, nn.Linear):
                    shape = _shape(node)
                    if shape is None or len(shape) != 2:
                        return False  # a Linear over a non-flat tensor mixes positions, not channels
                self.consumers.append(Consumer(user.target, mult))
                return True
            if isinstance(mod, _NORMS):
                if mod.num_features != self.channels:
                    return False
                self.norms.append(user.target)
                return self.follow(user)
            if isinstance(mod, _PASS_MODULES):
                return self.follow(user)
            return False
        if user.op == "call_function" and user.target in _PASS_FUNCTIONS:
            return user.args[0] is node and self.follow(user)
        if user.op == "call_method" and user.target in _PASS_METHODS:
            if user.target in ("view", "reshape"):
                shape = _shape(user)
                if shape is None or len(shape) != 2:
                    return False
            return user.args[0] is node and self.follow(user)
        return False


def find_structures(model: nn.Module, example_input: torch.Tensor, *, units: bool = True, filters: bool = True,
                    layers: bool = True, inputs: bool = False) -> tuple[list[Structure], list[WeightLayer]]:
    """The gateable structure sets of ``model`` and the weight layers whose cost they change."""
    gm = trace(model, example_input)
    modules = dict(model.named_modules())
    structures: list[Structure] = []
    weight_layers: dict[str, WeightLayer] = {}
    by_producer: dict[str, Structure] = {}

    for node in gm.graph.nodes:
        if node.op != "call_module" or not _is_weight_layer(modules.get(node.target, nn.Identity())):
            continue
        mod = modules[node.target]
        shape = _shape(node) or ()
        is_conv = isinstance(mod, nn.Conv2d)
        out_channels = mod.out_channels if is_conv else mod.out_features
        fan_in = mod.in_channels if is_conv else mod.in_features
        spatial = 1
        for d in shape[2:] if is_conv else shape[1:-1]:
            spatial *= int(d)
        wl = WeightLayer(node.target, kernel=mod.weight.numel() // (out_channels * fan_in), out_spatial=spatial,
                         has_bias=mod.bias is not None, norm_params=0)
        weight_layers[node.target] = wl
        if (is_conv and not filters) or (not is_conv and not units):
            walk = _Walk(gm, out_channels)
            if walk.follow(node):  # still learn the norms for the cost model
                wl.norm_params = 2 * len(walk.norms)
            continue
        walk = _Walk(gm, out_channels)
        if not walk.follow(node) or not walk.consumers:
            continue
        wl.norm_params = 2 * len(walk.norms)
        s = Structure(name=node.target, kind="filter" if is_conv else "unit",
                      host=walk.norms[-1] if walk.norms else node.target, producer=node.target,
                      norms=list(walk.norms), consumers=walk.consumers, width_dense=out_channels)
        structures.append(s)
        by_producer[node.target] = s

    for s in structures:
        for c in s.consumers:
            weight_layers[c.name].in_struct, weight_layers[c.name].in_mult = s.name, c.multiplicity
        weight_layers[s.producer].out_struct = s.name

    if inputs:
        structures.extend(_input_structures(gm, modules, weight_layers))

    if layers:
        for name, mod in model.named_modules():
            branch = getattr(mod, "branch", None)
            if isinstance(branch, nn.Module) and hasattr(mod, "shortcut") and not isinstance(branch, ZeroBranch):
                host = f"{name}.branch" if name else "branch"
                members = [w for w in weight_layers if w.startswith(host + ".")]
                s = Structure(name=host, kind="layer", host=host, width_dense=1, members=members)
                structures.append(s)
                for w in members:
                    weight_layers[w].section = host
    return structures, list(weight_layers.values())


def _input_structures(gm, modules, weight_layers) -> list[Structure]:
    """Gates on the flattened input features of the first Linear fed (through flatten) by the input."""
    out = []
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        frontier, seen = [node], []
        while frontier:
            n = frontier.pop()
            for user in n.users:
                if user.op == "call_module" and isinstance(modules.get(user.target), nn.Linear):
                    seen.append(user.target)
                elif (user.op == "call_module" and isinstance(modules.get(user.target), (nn.Flatten, nn.Identity))) or (
                        user.op == "call_function" and user.target is torch.flatten) or (
                        user.op == "call_method" and user.target in ("flatten", "view", "reshape")):
                    frontier.append(user)
        for name in seen:
            lin = modules[name]
            out.append(Structure(name=f"{name}:input", kind="input", host=name, consumers=[Consumer(name, 1)],
                                 width_dense=lin.in_features))
            weight_layers[name].in_struct, weight_layers[name].in_mult = f"{name}:input", 1
    return out


# --- physical removal -----------------------------------------------------------------------------

def _param(t: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(t.detach().clone(), requires_grad=like.requires_grad)


@torch.no_grad()
def remove_channels_local(model: nn.Module, s: Structure, keep: torch.Tensor) -> dict[str, list]:
    """Keep only channels ``keep`` (sorted indices) of structure ``s``: producer rows, norms, consumer columns.

    Returns the cuts as ``{parameter name: [(dim, kept indices)]}`` — what
    ``Trainer.rebuild_optimizer(index_maps=...)`` needs to carry momentum over.
    """
    keep = keep.to(torch.long)
    maps: dict[str, list] = {}

    def cut(name: str, dim: int, idx: torch.Tensor) -> None:
        maps.setdefault(name, []).append((dim, idx.cpu()))

    if s.producer is not None:
        cut(f"{s.producer}.weight", 0, keep)
        cut(f"{s.producer}.bias", 0, keep)
        prod = get_module(model, s.producer)
        prod.weight = _param(prod.weight[keep], prod.weight)
        if prod.bias is not None:
            prod.bias = _param(prod.bias[keep], prod.bias)
        if isinstance(prod, nn.Conv2d):
            prod.out_channels = int(keep.numel())
        else:
            prod.out_features = int(keep.numel())
    for nname in s.norms:
        bn = get_module(model, nname)
        cut(f"{nname}.weight", 0, keep)
        cut(f"{nname}.bias", 0, keep)
        if bn.weight is not None:
            bn.weight = _param(bn.weight[keep], bn.weight)
            bn.bias = _param(bn.bias[keep], bn.bias)
        if bn.running_mean is not None:
            bn.running_mean = bn.running_mean[keep].clone()
            bn.running_var = bn.running_var[keep].clone()
        bn.num_features = int(keep.numel())
    for c in s.consumers:
        cons = get_module(model, c.name)
        if isinstance(cons, nn.Conv2d):
            cut(f"{c.name}.weight", 1, keep)
            cons.weight = _param(cons.weight[:, keep], cons.weight)
            cons.in_channels = int(keep.numel())
        else:
            m = c.multiplicity
            cols = (keep.unsqueeze(1) * m + torch.arange(m, device=keep.device)).reshape(-1)
            cut(f"{c.name}.weight", 1, cols)
            cons.weight = _param(cons.weight[:, cols], cons.weight)
            cons.in_features = int(cols.numel())
            if s.kind == "input":
                cons.input_index = cons.input_index[cols].clone()
    return maps
