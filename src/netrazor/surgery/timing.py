"""Small CPU timing helper to choose between a folded and an unfolded form of one section."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.no_grad()
def median_ms(module: nn.Module, x: torch.Tensor, repeats: int = 15, warmup: int = 3) -> float:
    """Median wall time (ms) of ``module(x)``; both candidate forms are timed in one run."""
    module.eval()
    for _ in range(warmup):
        module(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        module(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def compare_forms(unfolded: nn.Module, folded: nn.Module, input_shape: tuple[int, ...],
                  batches: tuple[int, ...] = (1, 64), repeats: int = 15) -> dict:
    """Time both forms at each batch size, interleaved (A, B, A, B) to share the machine's noise.

    Returns ``{"b1": {"unfolded_ms", "folded_ms"}, ..., "keep": "folded"|"unfolded"}``: the folded
    form is kept when the geometric mean of folded/unfolded time ratios over the batch sizes is < 1.
    """
    out: dict = {}
    ratios = []
    gen = torch.Generator().manual_seed(0)
    for b in batches:
        x = torch.randn((b, *input_shape), generator=gen)
        u1 = median_ms(unfolded, x, repeats)
        f1 = median_ms(folded, x, repeats)
        u2 = median_ms(unfolded, x, repeats)
        f2 = median_ms(folded, x, repeats)
        u, f = min(u1, u2), min(f1, f2)
        out[f"b{b}"] = {"unfolded_ms": round(u, 4), "folded_ms": round(f, 4)}
        ratios.append(f / max(u, 1e-9))
    geo = float(torch.tensor(ratios).log().mean().exp())
    out["ratio_folded_over_unfolded"] = round(geo, 4)
    out["keep"] = "folded" if geo < 1.0 else "unfolded"
    return out
