"""Wall-clock latency of a forward pass: median of repeated timed runs after warm-up.

Timing noise on shared CPUs reaches ±40 % between runs (DESIGN.md), so we report the median and
the 10th/90th percentiles of ``repeats`` runs, and the number of intra-op threads the runs used
(``torch.get_num_threads()``): compare latencies only as ratios measured in the same process.
Runs are in eval mode under ``torch.inference_mode`` (the model's mode is restored afterwards).
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from torch import nn

from netrazor.errors import ConfigError
from netrazor.measure._util import check_shape, eval_mode, model_device, model_dtype


def latency_ms(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    repeats: int = 30,
    warmup: int = 5,
    seed: int = 0,
) -> dict:
    """Time ``model`` on a random batch; returns ``{median, p10, p90, mean, threads, batch_size, repeats}`` (ms)."""
    shape = check_shape(input_shape)
    for name, value, low in (("batch_size", batch_size, 1), ("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an int >= {low}, got {value!r}.")
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, *shape, generator=generator).to(device=device, dtype=model_dtype(model))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with eval_mode(model), torch.inference_mode():
        for _ in range(warmup):
            model(x)
        sync()
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            sync()
            times.append((time.perf_counter() - start) * 1000.0)
    arr = np.asarray(times)
    return {
        "median": float(np.median(arr)),
        "p10": float(np.percentile(arr, 10)),
        "p90": float(np.percentile(arr, 90)),
        "mean": float(arr.mean()),
        "threads": int(torch.get_num_threads()),
        "batch_size": batch_size,
        "repeats": repeats,
    }
