"""Which evaluator fits a memory budget: the automatic switch to worker processes [REC].

The batched evaluators trade memory for speed: ``delta`` keeps the layer's im2col of the whole
evaluation batch and the recorded activations around the layer, and its work buffers are capped
by its module constants (``GATHER_ELEMENTS``, ``CHUNK_ELEMENTS``, ``SHARED_ELEMENTS``,
``CACHE_ELEMENTS``); ``vectorised`` keeps the suffix's inputs and runs a chunk of candidates'
downstream activations at once. ``looped`` — and ``workers``, which runs it in forked processes —
needs only one forward's activations per process.

``step_bytes`` estimates these from one forward of a *single* example (forward hooks on the leaf
modules: the sum of their output sizes, times the batch size) — cheap, and an estimate: activations
of functional calls (``F.relu`` in ``forward``) and allocator slack are not counted, the caps are
counted in full. ``choose_evaluator`` keeps the asked evaluator when its estimate fits
``budget_bytes`` and otherwise switches to ``"workers"``; ``EvolutionMethod(memory_budget_mb=...)``
applies it per layer and records the choice and the estimate.
"""

from __future__ import annotations

import math

import torch
from torch import nn

FLOAT_BYTES = 4


@torch.no_grad()
def activation_elements_per_example(model: nn.Module, x: torch.Tensor) -> int:
    """Sum of every leaf module's output elements for one example (``x[:1]``)."""
    total = 0

    def hook(_module, _inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output[0].numel() if output.dim() > 0 else 1

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return total + x[0].numel()


@torch.no_grad()
def _layer_io(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> tuple[torch.Size, torch.Size]:
    shapes = {}
    handle = layer.register_forward_hook(lambda _m, i, o: shapes.update(inp=i[0].shape, out=o.shape))
    try:
        model(x[:1])
    finally:
        handle.remove()
    return shapes["inp"], shapes["out"]


def step_bytes(kind: str, model: nn.Module, layer_name: str, x: torch.Tensor, workers: int = 2) -> int:
    """Estimated peak bytes of one DE step's evaluator of ``kind`` for ``layer_name`` on batch ``x``."""
    batch = x.shape[0]
    forward = activation_elements_per_example(model, x) * batch
    if kind == "looped":
        return FLOAT_BYTES * forward
    if kind == "workers":  # the parent's copy plus one forward per forked process
        return FLOAT_BYTES * forward * (1 + workers)
    layer = model.get_submodule(layer_name)
    _, out_shape = _layer_io(model, layer, x)
    out_per_example = math.prod(out_shape[1:])
    if kind == "vectorised":
        from netrazor.methods.evolution.fitness import CHUNK_ELEMENTS

        # recorded suffix inputs (<= one forward) + a chunk of candidates' downstream activations,
        # the chunk sized so its layer output holds CHUNK_ELEMENTS (downstream ~ forward / layer out)
        downstream = CHUNK_ELEMENTS * max(1.0, forward / max(1, out_per_example * batch))
        return int(FLOAT_BYTES * (forward + downstream))
    from netrazor.methods.evolution import delta

    fan_in = layer.weight[0].numel()
    spatial = math.prod(out_shape[2:]) if len(out_shape) > 2 else 1
    im2col = fan_in * spatial * batch
    buffers = delta.GATHER_ELEMENTS + delta.CHUNK_ELEMENTS + delta.SHARED_ELEMENTS + delta.CACHE_ELEMENTS
    return FLOAT_BYTES * (forward + im2col + buffers)


def choose_evaluator(kind: str, model: nn.Module, layer_name: str, x: torch.Tensor, budget_bytes: float | None,
                     workers: int = 2) -> tuple[str, int | None, str | None]:
    """``(evaluator, estimated bytes, why switched or None)``: ``kind`` if no budget is set, if it
    is already a per-process evaluator, or if its estimate fits; else ``"workers"``."""
    if budget_bytes is None or kind in ("looped", "workers"):
        return kind, None, None
    need = step_bytes(kind, model, layer_name, x, workers)
    if need <= budget_bytes:
        return kind, need, None
    return "workers", need, (f"{kind} needs ~{need / 2**20:.0f} MiB for {layer_name}, over the budget of "
                             f"{budget_bytes / 2**20:.0f} MiB")
