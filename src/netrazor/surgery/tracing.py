"""One ``torch.fx`` trace for every pass that reads or rewrites a finished model's graph.

fx keeps ``torch.nn`` modules as ``call_module`` nodes and inlines every other module's forward.
netrazor's own layers would then dissolve: the gated first layer of an MLP (``InputSelectLinear``:
``index_select`` then ``linear``) becomes loose ops whose weight is a graph attribute, so after a
fold it is no longer a layer that evolution can sparsify or the quantiser can quantise, and the
evaluators that split a model at a layer cannot find it. Tracing them as leaves keeps them layers.

The gates method traces with plain fx on purpose: it discovers structures inside the layers.
"""

from __future__ import annotations

from torch import fx, nn


def _leaf_types() -> tuple[type, ...]:
    # imported late: the gates package imports surgery itself
    from netrazor.methods.gates.structures import InputSelectLinear

    return (InputSelectLinear,)


class _NetrazorTracer(fx.Tracer):
    def __init__(self) -> None:
        super().__init__()
        self._leaves = _leaf_types()

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self._leaves) or super().is_leaf_module(m, module_qualified_name)


def symbolic_trace(model: nn.Module) -> fx.GraphModule:
    """``fx.symbolic_trace`` that keeps netrazor's own layers as modules (raises what fx raises)."""
    tracer = _NetrazorTracer()
    graph = tracer.trace(model)  # sets tracer.root
    return fx.GraphModule(tracer.root, graph, type(model).__name__)
