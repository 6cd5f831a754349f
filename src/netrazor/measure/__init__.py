"""Measurements that back every claim: parameters, non-zeros, MACs, bytes, latency, accuracy."""

from netrazor.measure.accuracy import evaluate, normalize
from netrazor.measure.counts import count_nonzero, count_params, model_bytes
from netrazor.measure.latency import latency_ms
from netrazor.measure.macs import count_macs, macs_by_module
from netrazor.measure.record import measure_model

__all__ = [
    "count_params",
    "count_nonzero",
    "count_macs",
    "macs_by_module",
    "model_bytes",
    "latency_ms",
    "evaluate",
    "normalize",
    "measure_model",
]
