"""Candidates evaluated per second: vectorised vs one-forward-per-candidate, measured in one run.

For each layer we build one realistic DE step (``k`` = ``fraction`` of the layer, pool = the
``pool_factor``·k smallest survivors, a population of random k-subsets of the pool) and time both
evaluators on the same candidates, alternating them ``repeats`` times and keeping the median, so
machine noise hits both alike. The vectorised time includes building its evaluator (tracing the
suffix and caching the upstream activations), which a real step pays once. Both evaluators share
the cached teacher logits: the ratio measures only what vectorisation and suffix caching buy.
The fitness values of both are compared as well (they must agree).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from netrazor.methods.evolution.divergence import resolve_divergence
from netrazor.methods.evolution.fitness import LoopedFitness, VectorisedFitness
from netrazor.methods.evolution.saliency import candidate_pool
from netrazor.methods.masks import prunable_layers


@torch.no_grad()
def measure_throughput(model: nn.Module, x: torch.Tensor, candidates: int = 64, fraction: float = 0.05,
                       pool_factor: float = 3.0, repeats: int = 3, layers=None, seed: int = 0,
                       temperature: float = 4.0, chunk_size: int | None = None) -> dict:
    """``{"layers": {name: {...}}, "overall": {...}}`` with candidates/s of both evaluators and the
    ratio. "overall" is one step on every layer (a DE run with a fractional ``candidate_size``
    takes the same number of steps on every layer, so this is the mix a run sees)."""
    model = model.eval()
    teacher_logits = model(x)
    div = resolve_divergence("kl", temperature)
    g = torch.Generator().manual_seed(seed)
    out: dict = {"layers": {}, "candidates": candidates, "eval_batch": int(x.shape[0]), "repeats": repeats,
                 "threads": torch.get_num_threads()}
    tot_loop = tot_vec = 0.0
    for name, layer in prunable_layers(model, layers).items():
        w = layer.weight.detach()
        k = max(1, int(round(fraction * w.numel())))
        pool = candidate_pool(w.abs(), w != 0, k, pool_factor)
        keys = torch.rand(candidates, pool.numel(), generator=g)
        members = torch.zeros_like(keys, dtype=torch.bool).scatter_(1, torch.topk(keys, k, dim=1).indices, True)
        zero_sets = torch.zeros(candidates, w.numel(), dtype=torch.bool)
        zero_sets[:, pool] = members
        t_loop, t_vec = [], []
        looped = LoopedFitness(model, name, x, teacher_logits, div)
        for _ in range(repeats):
            t0 = time.perf_counter()
            a = looped(zero_sets)
            t_loop.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            b = VectorisedFitness(model, name, x, teacher_logits, div, chunk_size)(zero_sets)
            t_vec.append(time.perf_counter() - t0)
        tl, tv = statistics.median(t_loop), statistics.median(t_vec)
        tot_loop += tl
        tot_vec += tv
        out["layers"][name] = {"numel": w.numel(), "k": k, "pool": int(pool.numel()),
                               "looped_per_s": candidates / tl, "vectorised_per_s": candidates / tv,
                               "ratio": tl / tv, "max_abs_diff": float((a - b).abs().max())}
    n = candidates * len(out["layers"])
    out["overall"] = {"looped_per_s": n / tot_loop, "vectorised_per_s": n / tot_vec, "ratio": tot_loop / tot_vec}
    return out
