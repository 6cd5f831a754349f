"""After a layer gate removed a residual section: drop the rectifiers that became the identity.

A zoo basic block computes ``relu(shortcut(x) + branch(x))``. Once its branch is a
:class:`~netrazor.methods.gates.structures.ZeroBranch`, the block computes ``relu(shortcut(x))``;
with an identity shortcut and an input that is itself the output of a rectifier (every block of
a ResNet gets one: the stem and each block end in a ReLU), that ReLU sees only values >= 0 and is
the identity. Replacing it by ``nn.Identity`` is exact for *every* input, not just on some data,
so it needs no equivalence check on data; the removed section then costs one ``x + 0`` and no
rectifier — the network is shallower by the branch's two convs and by two rectifiers (the one
inside the branch, gone with it, and this one). A projection shortcut (conv + BN) can be
negative, so the ReLU after it stays.

[REC] Our addition to the layer gates of Guenter & Sideris: their papers drop the section's
computation; counting and removing the idle rectifier is what makes the removed depth show up
in the rectifier count that NEPENTHE / EASIER / Layer Folding are judged by (issue 6).
"""

from __future__ import annotations

import logging
import operator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

_RECTIFIER_MODULES = (nn.ReLU, nn.ReLU6)  # outputs >= 0 whatever the input
_RECTIFIER_FUNCTIONS = {F.relu, torch.relu, F.relu6}
_ADDS = {operator.add, torch.add}


def _nonnegative(node: torch.fx.Node, modules: dict[str, nn.Module], memo: dict[torch.fx.Node, bool]) -> bool:
    """True when ``node``'s value is provably >= 0 for every input (a conservative walk)."""
    if node in memo:
        return memo[node]
    memo[node] = False  # cycles cannot occur in fx graphs; this only guards the recursion
    result = False
    if node.op == "call_module":
        mod = modules.get(node.target)
        if isinstance(mod, _RECTIFIER_MODULES):
            result = True
        elif isinstance(mod, nn.Identity):
            result = isinstance(node.args[0], torch.fx.Node) and _nonnegative(node.args[0], modules, memo)
    elif node.op == "call_function" and node.target in _RECTIFIER_FUNCTIONS:
        result = True
    elif node.op == "call_function" and node.target in _ADDS and len(node.args) == 2 and not node.kwargs:
        # a sum of non-negative terms (a removed branch contributes the constant 0)
        result = all(isinstance(a, torch.fx.Node) and _nonnegative(a, modules, memo) for a in node.args)
    elif node.op == "call_method" and node.target in ("new_zeros", "zeros_like"):
        result = True  # ZeroBranch's 0
    memo[node] = result
    return result


def drop_idle_rectifiers(model: nn.Module) -> list[str]:
    """Replace (in place) every ``nn.ReLU`` module whose input is provably >= 0 by ``nn.Identity``.

    Returns the replaced module names. A module called at several places is replaced only if all
    its inputs are non-negative. A model torch.fx cannot trace is left unchanged (nothing is
    lost but the rectifier count: the ReLU stays exact).
    """
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for data-dependent control flow
        log.info("idle rectifiers not checked: %s cannot be traced (%s)", type(model).__name__, exc)
        return []
    modules = dict(gm.named_modules())
    memo: dict[torch.fx.Node, bool] = {}
    verdict: dict[str, bool] = {}
    for node in gm.graph.nodes:
        # only ReLU is the identity on [0, inf): ReLU6 still clips at 6
        if node.op == "call_module" and type(modules.get(node.target)) is nn.ReLU:
            arg = node.args[0] if node.args else None
            ok = isinstance(arg, torch.fx.Node) and _nonnegative(arg, modules, memo)
            verdict[node.target] = verdict.get(node.target, True) and ok
    idle = [name for name, ok in verdict.items() if ok]
    for name in idle:
        model.set_submodule(name, nn.Identity())
    if idle:
        log.info("rectifiers made idle by removed sections, replaced by Identity: %s", ", ".join(idle))
    return idle
