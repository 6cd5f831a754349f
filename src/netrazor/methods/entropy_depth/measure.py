"""Before/after numbers for the records: params, non-zeros, MACs, latency (netrazor.measure)."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

log = logging.getLogger(__name__)


def measure_cost(model: nn.Module, input_shape: tuple[int, ...], latency: bool = True, repeats: int = 30) -> dict[str, Any]:
    """``{params, nonzero, macs, latency_ms_b1, latency_ms_b64}`` (medians), via netrazor.measure.

    Keys whose measurement is unavailable are left out (the record omits what does not apply).
    """
    out: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters()), "nonzero": sum(int((p != 0).sum()) for p in model.parameters())}
    try:
        from netrazor import measure as m
    except ImportError:  # pragma: no cover
        return out
    if hasattr(m, "count_params"):
        out["params"] = int(m.count_params(model))
    if hasattr(m, "count_nonzero"):
        out["nonzero"] = int(m.count_nonzero(model))
    if hasattr(m, "count_macs"):
        out["macs"] = int(m.count_macs(model, tuple(input_shape)))
    if latency and hasattr(m, "latency_ms"):
        was_training = model.training
        model.eval()
        try:
            out["latency_ms_b1"] = float(m.latency_ms(model, tuple(input_shape), batch_size=1, repeats=repeats)["median"])
            out["latency_ms_b64"] = float(m.latency_ms(model, tuple(input_shape), batch_size=64, repeats=max(5, repeats // 3))["median"])
        finally:
            model.train(was_training)
    return out
