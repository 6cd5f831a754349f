"""Which weighted layers feed each rectifier, and which op directly produces its input.

EGP/NEPENTHE attach to rectifier l "the layer feeding it": its weights are pruned by l's budget
and their mean |w| is m_l. We find it with torch.fx: from the rectifier's input, walk the graph
backwards through weight-free ops (BatchNorm, pooling, add, cat, reshape, dropout, identity) and
stop at weighted modules (Conv*, Linear) -- those are the feeding layers -- or at another
rectifier / the graph input. A post-add ReLU of a residual block is thus fed by the last conv of
its branch and, where present, the projection conv of the shortcut (an identity shortcut leads to
the previous rectifier and stops there). Each weighted module belongs to at most one rectifier.

[REC] When the model cannot be traced by torch.fx we fall back to module registration order:
each rectifier gets the last Conv/Linear registered before it. That matches plain chains
(VGG, MLPs, conv-bn-relu blocks) but not every graph; the fallback is logged.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import torch.fx as fx
from torch import nn

from netrazor.errors import ModelError
from netrazor.methods.entropy_depth.entropy import find_rectifiers, is_rectifier
from netrazor.surgery.tracing import symbolic_trace

log = logging.getLogger(__name__)

WEIGHTED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class RectifierLinks:
    """``feeding[r]``: weighted modules feeding rectifier r; ``producer[r]``: module whose output
    is r's input when that is a single module call (else None); ``traced``: torch.fx worked."""

    feeding: dict[str, list[str]] = field(default_factory=dict)
    producer: dict[str, str | None] = field(default_factory=dict)
    traced: bool = True


def link_rectifiers(model: nn.Module) -> RectifierLinks:
    """Map every rectifier of ``model`` to its feeding weighted layers (see module docstring)."""
    rectifiers = [n for n, _ in find_rectifiers(model)]
    try:
        graph = symbolic_trace(model).graph
    except Exception as exc:  # fx raises many kinds on dynamic control flow
        log.info("torch.fx could not trace %s (%s); using module order to find feeding layers", type(model).__name__, exc)
        return _link_by_order(model, rectifiers)
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    reused = [r for r in rectifiers if calls.get(r, 0) > 1]
    if reused:
        raise ModelError(
            f"rectifier module(s) {reused} are called more than once in forward; their entropy would mix "
            "several layers. Give each call its own nn.ReLU instance."
        )
    links = RectifierLinks()
    claimed: set[str] = set()
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in rectifiers:
            continue
        name = str(node.target)
        src = node.all_input_nodes[0] if node.all_input_nodes else None
        links.producer[name] = str(src.target) if src is not None and src.op == "call_module" else None
        found: list[str] = []
        stack = list(node.all_input_nodes)
        seen: set[fx.Node] = set()
        while stack:
            cur = stack.pop()
            if cur in seen:
                continue
            seen.add(cur)
            if cur.op == "call_module":
                mod = modules[str(cur.target)]
                if isinstance(mod, WEIGHTED_TYPES):
                    if str(cur.target) not in claimed:
                        found.append(str(cur.target))
                        claimed.add(str(cur.target))
                    continue
                if is_rectifier(mod):
                    continue
            if cur.op in ("placeholder", "get_attr"):
                continue
            stack.extend(cur.all_input_nodes)
        links.feeding[name] = sorted(found, key=list(modules).index)
    for r in rectifiers:  # rectifiers never called in forward
        links.feeding.setdefault(r, [])
        links.producer.setdefault(r, None)
    return links


def _link_by_order(model: nn.Module, rectifiers: list[str]) -> RectifierLinks:
    links = RectifierLinks(traced=False)
    last: str | None = None
    claimed: set[str] = set()
    for name, mod in model.named_modules():
        if isinstance(mod, WEIGHTED_TYPES):
            last = name
        elif name in rectifiers:
            links.feeding[name] = [last] if last is not None and last not in claimed else []
            if last is not None:
                claimed.add(last)
            links.producer[name] = None
    return links
