"""Candidates evaluated per second: batched evaluators vs one-forward-per-candidate, in one run.

For each layer we build one realistic DE step (``k`` = ``fraction`` of the layer, pool = the
``pool_factor``·k smallest survivors, a population of random k-subsets of the pool) and time every
evaluator on the same candidates, alternating them ``repeats`` times and keeping the median, so
machine noise hits all alike. Each batched evaluator's time includes building it (tracing, caching
the upstream activations), which a real step pays once. All share the cached teacher logits: the
ratios measure only what batching and caching buy. Fitness values are compared with the looped
reference (they must agree).

Evaluators timed (``EVALUATORS``): ``looped`` (the reference: one full forward per candidate),
``vectorised`` (vmap over the fx suffix), ``delta-native-pool`` (``DeltaFitness`` with
``fast_pool=False``: structure only — weight deltas, channel-sparse propagation — with the model's
own ops), ``delta-unshared`` (``dedup_channels=False``: without the shared channel subsets of
``delta``'s 4b) and ``delta`` (the default evaluator). ``ratio`` = looped time /
``delta`` time; the per-evaluator ratios show which part of the speed comes from where.
"""

from __future__ import annotations

import statistics
import time
from functools import partial

import torch
from torch import nn

from netrazor.methods.evolution.delta import DeltaFitness
from netrazor.methods.evolution.divergence import resolve_divergence
from netrazor.methods.evolution.fitness import LoopedFitness, VectorisedFitness
from netrazor.methods.evolution.saliency import candidate_pool
from netrazor.methods.masks import prunable_layers

EVALUATORS = {
    "vectorised": VectorisedFitness,
    "delta-native-pool": partial(DeltaFitness, fast_pool=False),
    "delta-unshared": partial(DeltaFitness, dedup_channels=False),
    "delta": DeltaFitness,
}
DEFAULT = "delta"


def _step_candidates(w: torch.Tensor, candidates: int, fraction: float, pool_factor: float,
                     g: torch.Generator) -> tuple[int, int, torch.Tensor]:
    """One DE step's population for a layer: random k-subsets of its pool (``[candidates, numel]``)."""
    k = max(1, int(round(fraction * w.numel())))
    pool = candidate_pool(w.abs(), w != 0, k, pool_factor)
    keys = torch.rand(candidates, pool.numel(), generator=g)
    members = torch.zeros_like(keys, dtype=torch.bool).scatter_(1, torch.topk(keys, k, dim=1).indices, True)
    zero_sets = torch.zeros(candidates, w.numel(), dtype=torch.bool)
    zero_sets[:, pool] = members
    return k, int(pool.numel()), zero_sets


@torch.no_grad()
def measure_throughput(model: nn.Module, x: torch.Tensor, candidates: int = 64, fraction: float = 0.05,
                       pool_factor: float = 3.0, repeats: int = 3, layers=None, seed: int = 0,
                       temperature: float = 4.0, chunk_size: int | None = None,
                       mix: dict[str, int] | None = None) -> dict:
    """``{"layers": {name: {...}}, "overall": {...}}``: candidates/s of the looped reference and of
    every evaluator in ``EVALUATORS`` (median over repeats), their ratios to looped, and the largest
    fitness difference. ``ratio`` (per layer and overall) is looped vs the default evaluator
    (``delta``). "overall" is one step on every layer (a DE run with a fractional
    ``candidate_size`` takes the same number of steps on every layer when the layers' densities
    move alike, so this is the plain mix).

    Protocol for a shared, noisy machine: each repeat times every evaluator on every layer back to
    back; a ratio is the *median over repeats of the per-repeat ratio* (looped and batched
    measured within seconds of each other), so a load spike in one repeat cannot decide it.

    ``mix`` ({layer: steps}, e.g. ``EvolutionMethod(...).schedule_steps(model)``) adds "run_mix":
    the same measurements weighted by how many steps a real run takes on each layer."""
    model = model.eval()
    teacher_logits = model(x)
    div = resolve_divergence("kl", temperature)
    g = torch.Generator().manual_seed(seed)
    names = ["looped", *EVALUATORS]
    steps = {}
    for name, layer in prunable_layers(model, layers).items():
        steps[name] = _step_candidates(layer.weight.detach(), candidates, fraction, pool_factor, g)
    times = {ln: {e: [] for e in names} for ln in steps}
    diffs = {ln: {e: 0.0 for e in EVALUATORS} for ln in steps}
    paths: dict = {ln: {} for ln in steps}
    for _ in range(repeats):
        for ln, (_, _, zero_sets) in steps.items():
            t0 = time.perf_counter()
            reference = LoopedFitness(model, ln, x, teacher_logits, div)(zero_sets)
            times[ln]["looped"].append(time.perf_counter() - t0)
            for e, make in EVALUATORS.items():
                t0 = time.perf_counter()
                evaluator = make(model, ln, x, teacher_logits, div, chunk_size=chunk_size)
                values = evaluator(zero_sets)
                times[ln][e].append(time.perf_counter() - t0)
                diffs[ln][e] = max(diffs[ln][e], float((values - reference).abs().max()))
                paths[ln][e] = getattr(evaluator, "fallback", None) or getattr(evaluator, "path_used", None)

    def ratios(loop_times, e_times):
        return statistics.median(a / b for a, b in zip(loop_times, e_times))

    out: dict = {"layers": {}, "candidates": candidates, "eval_batch": int(x.shape[0]), "repeats": repeats,
                 "threads": torch.get_num_threads(), "default_evaluator": DEFAULT,
                 "protocol": "ratio = median over repeats of the per-repeat time ratio; per_s = median"}
    for ln, (k, pool_size, _) in steps.items():
        t = times[ln]
        row = {"numel": steps_numel(model, ln), "k": k, "pool": pool_size,
               "looped_per_s": candidates / statistics.median(t["looped"]),
               "evaluators": {e: {"per_s": candidates / statistics.median(t[e]), "ratio": ratios(t["looped"], t[e]),
                                  "max_abs_diff": diffs[ln][e], "path": paths[ln][e]} for e in EVALUATORS}}
        row["ratio"] = row["evaluators"][DEFAULT]["ratio"]
        row["max_abs_diff"] = max(diffs[ln].values())
        out["layers"][ln] = row
    n = candidates * len(steps)
    total = {e: [sum(times[ln][e][r] for ln in steps) for r in range(repeats)] for e in names}
    out["overall"] = {"looped_per_s": n / statistics.median(total["looped"]),
                      "evaluators": {e: {"per_s": n / statistics.median(total[e]), "ratio": ratios(total["looped"], total[e])}
                                     for e in EVALUATORS}}
    out["overall"]["ratio"] = out["overall"]["evaluators"][DEFAULT]["ratio"]
    if mix:
        w = {ln: mix.get(ln, 0) for ln in steps}
        n_mix = candidates * sum(w.values())
        mixed = {e: [sum(w[ln] * times[ln][e][r] for ln in steps) for r in range(repeats)] for e in names}
        out["run_mix"] = {"steps": w, "looped_per_s": n_mix / statistics.median(mixed["looped"]),
                          "evaluators": {e: {"per_s": n_mix / statistics.median(mixed[e]),
                                             "ratio": ratios(mixed["looped"], mixed[e])} for e in EVALUATORS}}
        out["run_mix"]["ratio"] = out["run_mix"]["evaluators"][DEFAULT]["ratio"]
    return out


def steps_numel(model: nn.Module, name: str) -> int:
    return model.get_submodule(name).weight.numel()
