"""Run a network *from one layer onwards*, reusing everything computed before that layer.

Candidates for layer ``l`` only change ``l``'s weight, so every activation that does not depend on
``l`` (the prefix, and skip paths around ``l``) is the same for all of them. We trace the model
with ``torch.fx``, mark the nodes downstream of ``l``, run the full graph once to record the
"frontier" values the downstream nodes read from upstream, and build a small GraphModule of the
downstream nodes whose inputs are those recorded values. Models that ``torch.fx`` cannot trace
(data-dependent control flow) fall back to the whole model as the "suffix"; under ``vmap`` the
unbatched prefix is then still computed once per population chunk, just not cached across
generations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import fx, nn

from netrazor.surgery.tracing import symbolic_trace

log = logging.getLogger(__name__)


@dataclass
class Suffix:
    module: nn.Module            # call as module(*inputs); parameters keep the model's names
    inputs: tuple[torch.Tensor, ...]
    traced: bool                 # False: the fallback (whole model, inputs = (x,))
    layer_output_numel: int      # elements of the layer's output on x (sizes the vmap chunks)


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, wanted: set[fx.Node]) -> None:
        super().__init__(gm)
        self.wanted = wanted
        self.values: dict[fx.Node, torch.Tensor] = {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n in self.wanted:
            self.values[n] = out
        return out


def _downstream(start: fx.Node) -> set[fx.Node]:
    seen, stack = {start}, [start]
    while stack:
        for user in stack.pop().users:
            if user not in seen:
                seen.add(user)
                stack.append(user)
    return seen


@torch.no_grad()
def build_suffix(model: nn.Module, layer_name: str, x: torch.Tensor) -> Suffix:
    """The part of ``model`` that depends on module ``layer_name``, with its inputs precomputed on ``x``."""
    try:
        gm = symbolic_trace(model)
    except Exception as exc:  # fx raises many types for untraceable code
        log.info("torch.fx cannot trace %s (%s); evaluating candidates on the whole model", type(model).__name__, exc)
        return _fallback(model, layer_name, x)
    calls = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == layer_name]
    if len(calls) != 1:
        log.info("layer %s is called %d times in the graph; evaluating on the whole model", layer_name, len(calls))
        return _fallback(model, layer_name, x)
    down = _downstream(calls[0])
    output = next(n for n in gm.graph.nodes if n.op == "output")
    # Frontier: values produced upstream and read downstream (the layer's own input among them).
    frontier: list[fx.Node] = []
    for n in gm.graph.nodes:
        if n in down and n is not output:
            for a in n.all_input_nodes:
                if a not in down and a not in frontier:
                    frontier.append(a)
    for a in output.all_input_nodes:
        if a not in down and a not in frontier:
            frontier.append(a)
    recorder = _Recorder(gm, set(frontier))
    sizes: list[int] = []
    hook = gm.get_submodule(layer_name).register_forward_hook(lambda m, i, o: sizes.append(o.numel()))
    try:
        recorder.run(x)
    finally:
        hook.remove()
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for i, a in enumerate(frontier):
        env[a] = graph.placeholder(f"frontier_{i}")
    for n in gm.graph.nodes:
        if n in down and n is not output:
            env[n] = graph.node_copy(n, lambda a: env[a])
    graph.output(fx.map_arg(output.args[0], lambda a: env[a]))
    graph.lint()
    suffix = fx.GraphModule(gm, graph)
    return Suffix(suffix, tuple(recorder.values[a] for a in frontier), traced=True, layer_output_numel=sizes[0])


def _fallback(model: nn.Module, layer_name: str, x: torch.Tensor) -> Suffix:
    sizes: list[int] = []
    hook = model.get_submodule(layer_name).register_forward_hook(lambda m, i, o: sizes.append(o.numel()))
    try:
        model(x)
    finally:
        hook.remove()
    return Suffix(model, (x,), traced=False, layer_output_numel=sizes[0] if sizes else x.numel())
