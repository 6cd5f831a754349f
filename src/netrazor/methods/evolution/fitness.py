"""Fitness of candidate zero-sets: the hot loop of directed evolution.

fitness(C) = D(teacher(x_B) ‖ student with the weights in C zeroed (x_B)) on a fixed batch x_B.
Two evaluators with the same answer:

``LoopedFitness``       one full student forward per candidate (the naive reference).
``VectorisedFitness``   the teacher logits and everything upstream of layer ``l`` computed once
                        (``suffix.build_suffix``); then ``torch.func.vmap`` over a stack of P
                        masked weights runs only the downstream part, P candidates per call.
                        ``chunk_size`` bounds memory (P·B activations of the downstream part);
                        by default a chunk holds at most ``CHUNK_ELEMENTS`` elements of the
                        layer's batched output (measured: on LeNet-5, conv1 evaluates fastest
                        one candidate at a time, fc1 with all 32 at once — cache, not flops).

The default evaluator is ``delta.DeltaFitness`` (only what a candidate changes is recomputed);
for models too large for batched evaluation, ``workers.WorkerFitness`` shards the population
over forked processes running ``LoopedFitness`` (see ``make_fitness``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from netrazor.methods.evolution.divergence import Divergence
from netrazor.methods.evolution.suffix import build_suffix

CHUNK_ELEMENTS = 4_000_000  # ~16 MB of float32 per chunk of the layer's batched output


def candidate_weights(weight: torch.Tensor, zero_sets: torch.Tensor) -> torch.Tensor:
    """``[P, *weight.shape]``: the layer weight with each candidate's positions zeroed.

    ``zero_sets`` is a bool ``[P, weight.numel()]`` (True = zero this weight)."""
    keep = (~zero_sets).to(device=weight.device, dtype=weight.dtype).view(zero_sets.shape[0], *weight.shape)
    return weight.unsqueeze(0) * keep


class LoopedFitness:
    """Reference evaluator: for each candidate, one forward pass of the whole student."""

    def __init__(self, model: nn.Module, layer_name: str, x: torch.Tensor, teacher_logits: torch.Tensor,
                 divergence: Divergence) -> None:
        self.model, self.x, self.teacher_logits, self.divergence = model, x, teacher_logits, divergence
        self.key = f"{layer_name}.weight"
        self.weight = model.get_submodule(layer_name).weight.detach()

    @torch.no_grad()
    def __call__(self, zero_sets: torch.Tensor) -> torch.Tensor:
        out = []
        for w in candidate_weights(self.weight, zero_sets):
            logits = functional_call(self.model, {self.key: w}, (self.x,))
            out.append(self.divergence(logits.unsqueeze(0), self.teacher_logits))
        return torch.cat(out)


class VectorisedFitness:
    """Batched evaluator: P candidates per call of the downstream part of the network."""

    def __init__(self, model: nn.Module, layer_name: str, x: torch.Tensor, teacher_logits: torch.Tensor,
                 divergence: Divergence, chunk_size: int | None = None) -> None:
        self.teacher_logits, self.divergence, self.chunk_size = teacher_logits, divergence, chunk_size
        self.key = f"{layer_name}.weight"
        self.weight = model.get_submodule(layer_name).weight.detach()
        self.suffix = build_suffix(model, layer_name, x)
        inputs, module, key = self.suffix.inputs, self.suffix.module, self.key
        # Only the weight carries the candidate axis; the cached inputs are shared (unbatched).
        self._batched = vmap(lambda w: functional_call(module, {key: w}, inputs))

    @torch.no_grad()
    def __call__(self, zero_sets: torch.Tensor) -> torch.Tensor:
        n = zero_sets.shape[0]
        step = self.chunk_size or max(1, CHUNK_ELEMENTS // max(1, self.suffix.layer_output_numel))
        out = []
        for start in range(0, n, step):
            logits = self._batched(candidate_weights(self.weight, zero_sets[start:start + step]))
            out.append(self.divergence(logits, self.teacher_logits))
        return torch.cat(out)


EVALUATORS = ("delta", "vectorised", "looped", "workers")


def make_fitness(kind: str, model: nn.Module, layer_name: str, x: torch.Tensor, teacher_logits: torch.Tensor,
                 divergence: Divergence, chunk_size: int | None = None, workers: int = 2,
                 pool: torch.Tensor | None = None):
    """``kind``: "delta" (``delta.DeltaFitness``: weight deltas on the touched channels, falls back
    to "vectorised" where it does not apply), "vectorised" (vmap over the suffix), "looped", or
    "workers" (``workers.WorkerFitness``: "looped" sharded over ``workers`` forked processes, for
    models too large for batched evaluation; call its ``close()`` when the step is done).
    ``pool``: the step's candidate pool (flat indices), which lets "delta" reuse its gathers."""
    if kind == "workers":
        from netrazor.methods.evolution.workers import WorkerFitness

        return WorkerFitness(model, layer_name, x, teacher_logits, divergence, workers=workers)
    if kind == "looped":
        return LoopedFitness(model, layer_name, x, teacher_logits, divergence)
    if kind == "delta":
        from netrazor.methods.evolution.delta import DeltaFitness

        return DeltaFitness(model, layer_name, x, teacher_logits, divergence, chunk_size, pool=pool)
    return VectorisedFitness(model, layer_name, x, teacher_logits, divergence, chunk_size)
