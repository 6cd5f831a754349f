"""A torch.fx graph as JSON: whitelisted layers, functions and tensor methods, nothing executable.

Used by :func:`netrazor.surgery.save_model` for models that are not (or no longer) plain zoo
models, e.g. the ``GraphModule`` returned by ``fold_linear_sections``. Loading rebuilds the
graph node by node; a function or method name outside the whitelist is refused, so a hostile
file cannot call arbitrary code.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from netrazor.errors import CheckpointError
from netrazor.surgery.layers import Unsupported, build_layer, layer_record
from netrazor.surgery.tracing import symbolic_trace

FUNCTIONS: dict[str, Any] = {
    "operator.add": operator.add, "operator.iadd": operator.add, "operator.mul": operator.mul,
    "operator.sub": operator.sub, "operator.getitem": operator.getitem, "operator.truediv": operator.truediv,
    "torch.add": torch.add, "torch.cat": torch.cat, "torch.flatten": torch.flatten, "torch.relu": torch.relu,
    "torch.mean": torch.mean, "torch.sigmoid": torch.sigmoid,
    "F.relu": F.relu, "F.relu6": F.relu6, "F.pad": F.pad, "F.adaptive_avg_pool2d": F.adaptive_avg_pool2d,
    "F.avg_pool2d": F.avg_pool2d, "F.max_pool2d": F.max_pool2d, "F.linear": F.linear,
}
_FN_NAMES = {id(fn): name for name, fn in reversed(list(FUNCTIONS.items()))}
_FN_NAMES[id(operator.iadd)] = "operator.iadd"
METHODS = {"view", "reshape", "flatten", "size", "mean", "add", "relu", "contiguous", "permute", "chunk",
           "transpose", "squeeze", "unsqueeze", "mul", "sum", "new_zeros", "index_select"}


def _encode(value: Any) -> Any:
    if isinstance(value, fx.Node):
        return {"node": value.name}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"dict": {str(k): _encode(v) for k, v in value.items()}}
    if isinstance(value, slice):
        return {"slice": [_encode(value.start), _encode(value.stop), _encode(value.step)]}
    if value is Ellipsis:
        return {"ellipsis": True}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise Unsupported(f"argument of type {type(value).__name__}")


def _decode(value: Any, env: dict[str, fx.Node]) -> Any:
    if isinstance(value, list):
        return [_decode(v, env) for v in value]
    if isinstance(value, dict):
        if "node" in value:
            if value["node"] not in env:
                raise CheckpointError(f"graph refers to unknown node {value['node']!r}; the file is corrupt.")
            return env[value["node"]]
        if "tuple" in value:
            return tuple(_decode(v, env) for v in value["tuple"])
        if "dict" in value:
            return {k: _decode(v, env) for k, v in value["dict"].items()}
        if "slice" in value:
            return slice(*(_decode(v, env) for v in value["slice"]))
        if "ellipsis" in value:
            return Ellipsis
        raise CheckpointError(f"unknown argument encoding {str(value)[:80]}; the file is corrupt.")
    return value


def graph_to_spec(model: nn.Module) -> dict:
    """Describe ``model`` (traced with fx unless it is a GraphModule) as JSON data."""
    gm = model if isinstance(model, fx.GraphModule) else symbolic_trace(model)
    params = dict(gm.named_parameters())
    buffers = dict(gm.named_buffers())
    nodes, modules, attrs = [], {}, {}
    for node in gm.graph.nodes:
        rec: dict[str, Any] = {"op": node.op, "name": node.name}
        if node.op == "placeholder":
            rec["target"] = node.target
        elif node.op == "get_attr":
            if node.target in params:
                attrs[node.target] = "parameter"
            elif node.target in buffers:
                attrs[node.target] = "buffer"
            else:
                raise Unsupported(f"constant attribute {node.target}")
            rec["target"] = node.target
        elif node.op == "call_module":
            modules[node.target] = layer_record(gm.get_submodule(node.target))
            rec["target"] = node.target
        elif node.op == "call_function":
            name = _FN_NAMES.get(id(node.target))
            if name is None:
                raise Unsupported(f"function {getattr(node.target, '__name__', node.target)}")
            rec["target"] = name
        elif node.op == "call_method":
            if node.target not in METHODS:
                raise Unsupported(f"tensor method {node.target}")
            rec["target"] = node.target
        rec["args"] = _encode(tuple(node.args))
        rec["kwargs"] = _encode(dict(node.kwargs))
        nodes.append(rec)
    return {"nodes": nodes, "modules": modules, "attrs": attrs}


def _ensure_parent(root: nn.Module, path: str) -> tuple[nn.Module, str]:
    parts = path.split(".")
    owner = root
    for p in parts[:-1]:
        if p not in owner._modules:
            owner.add_module(p, nn.Module())
        owner = owner._modules[p]
    return owner, parts[-1]


def spec_to_graph_module(spec: dict, tensors: dict[str, torch.Tensor]) -> fx.GraphModule:
    """Rebuild the GraphModule (fresh layers; the caller loads the weights)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("nodes"), list):
        raise CheckpointError("the graph spec has no node list; the file is corrupt — re-save the model.")
    root = nn.Module()
    for target, record in spec.get("modules", {}).items():
        owner, leaf = _ensure_parent(root, target)
        owner.add_module(leaf, build_layer(record))
    for target, kind in spec.get("attrs", {}).items():
        if target not in tensors:
            raise CheckpointError(f"the weights lack {target!r} that the graph reads; the files do not match.")
        owner, leaf = _ensure_parent(root, target)
        value = torch.empty_like(tensors[target])
        if kind == "parameter":
            owner.register_parameter(leaf, nn.Parameter(value))
        else:
            owner.register_buffer(leaf, value)
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    for rec in spec["nodes"]:
        op, target = rec.get("op"), rec.get("target")
        args = _decode(rec.get("args", {"tuple": []}), env)
        kwargs = _decode(rec.get("kwargs", {"dict": {}}), env)
        if op == "placeholder":
            node = graph.placeholder(target)
        elif op == "get_attr":
            node = graph.get_attr(target)
        elif op == "call_module":
            if target not in spec.get("modules", {}):
                raise CheckpointError(f"graph calls undeclared module {target!r}; the file is corrupt.")
            node = graph.call_module(target, args, kwargs)
        elif op == "call_function":
            if target not in FUNCTIONS:
                raise CheckpointError(f"graph calls {target!r}, which is not whitelisted; refusing to load it.")
            node = graph.call_function(FUNCTIONS[target], args, kwargs)
        elif op == "call_method":
            if target not in METHODS:
                raise CheckpointError(f"graph calls tensor method {target!r}, which is not whitelisted; refusing.")
            node = graph.call_method(target, args, kwargs)
        elif op == "output":
            node = graph.output(args[0])
        else:
            raise CheckpointError(f"unknown graph op {op!r}; the file is corrupt or from a newer netrazor.")
        env[rec.get("name", node.name)] = node
    try:
        graph.lint()
    except Exception as exc:
        raise CheckpointError(f"the saved graph is inconsistent ({exc}); the file is corrupt.") from exc
    return fx.GraphModule(root, graph)
