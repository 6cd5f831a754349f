"""Before/after numbers for the records: params, non-zeros, MACs, latency (netrazor.measure)."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from netrazor import measure as m

log = logging.getLogger(__name__)


def measure_cost(model: nn.Module, input_shape: tuple[int, ...], latency: bool = True, repeats: int = 30) -> dict[str, Any]:
    """``{params, nonzero, macs, latency_ms_b1, latency_ms_b64}`` (medians), via netrazor.measure.

    The latency keys are left out when ``latency`` is False.
    """
    out: dict[str, Any] = {
        "params": int(m.count_params(model)),
        "nonzero": int(m.count_nonzero(model)),
        "macs": int(m.count_macs(model, tuple(input_shape))),
    }
    if latency:
        was_training = model.training
        model.eval()
        try:
            out["latency_ms_b1"] = float(m.latency_ms(model, tuple(input_shape), batch_size=1, repeats=repeats)["median"])
            out["latency_ms_b64"] = float(m.latency_ms(model, tuple(input_shape), batch_size=64, repeats=max(5, repeats // 3))["median"])
        finally:
            model.train(was_training)
    return out


def paired_latency(models: dict[str, nn.Module], input_shape: tuple[int, ...], repeats: int = 30, pairs: int = 3) -> dict[str, float]:
    """Latency of several models measured back to back, alternating: ``{suffix: model}``.

    Timing noise on a shared CPU reaches +-40 % between minutes (DESIGN.md), so before/after are
    timed in the same minute, ``pairs`` times alternately, each in contiguous (NCHW) memory format
    (training may leave a model channels_last), and the median of the medians is kept.
    Keys: ``latency_ms_b1<suffix>``, ``latency_ms_b64<suffix>``.
    """
    import copy
    import statistics

    import torch

    ready = {}
    for key, model in models.items():
        c = copy.deepcopy(model).eval()
        ready[key] = c.to(memory_format=torch.contiguous_format) if len(input_shape) == 3 else c
    samples: dict[str, list[float]] = {}
    for _ in range(pairs):
        for key, model in ready.items():
            samples.setdefault(f"latency_ms_b1{key}", []).append(float(m.latency_ms(model, tuple(input_shape), batch_size=1, repeats=repeats)["median"]))
            samples.setdefault(f"latency_ms_b64{key}", []).append(float(m.latency_ms(model, tuple(input_shape), batch_size=64, repeats=max(5, repeats // 3))["median"]))
    return {k: statistics.median(v) for k, v in samples.items()}
