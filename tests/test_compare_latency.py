"""benchmarks.compare's latency breakdown and reasons, and render.py printing a recorded reason."""

from __future__ import annotations

import torch

from benchmarks import render
from benchmarks.compare import explain_latency, latency_breakdown, latency_efficiency, latency_reason, paired_times
from netrazor.models import build_model

SHAPE = (1, 28, 28)


def _lenets():
    torch.manual_seed(0)
    dense = build_model("lenet5", num_classes=10, in_channels=1, input_size=28)
    small = build_model("lenet5", num_classes=10, in_channels=1, input_size=28, width_mult=0.25)
    return dense, small


def test_paired_times_covers_every_leaf_and_the_whole_forward():
    dense, small = _lenets()
    t = paired_times(dense, small, SHAPE, batch_size=4, repeats=5, warmup=1)
    leaves = [n for n, m in dense.named_modules() if n and not list(m.children())]
    assert list(t["layers"]) == leaves
    assert all(ms > 0 and ms_dense > 0 for ms, ms_dense in t["layers"].values())
    assert t["total_ms"] > 0 and t["total_ms_dense"] > 0
    assert small.training and dense.training  # modes restored


def test_a_removed_layer_is_timed_on_the_dense_side_and_costs_nothing_after():
    """A leaf the compressed model lost (a residual section removed whole) counts with its dense time and MACs,
    so the MAC layers' speed-up and MAC cut include it instead of the dense glue."""
    dense, _ = _lenets()
    small = build_model("lenet5", num_classes=10, in_channels=1, input_size=28)
    del small.fc2  # gone: the model below no longer calls it
    small.forward = lambda x, m=small: m.fc1(m.flatten(m.pool2(m.relu2(m.conv2(m.pool1(m.relu1(m.conv1(x))))))))
    part = latency_breakdown(dense, small, SHAPE, batch_sizes=(2,))["b2"]
    rows = {r["name"]: r for r in part["layers"]}
    assert rows["fc2"]["ms"] == 0.0 and rows["fc2"]["ms_dense"] > 0
    assert rows["fc2"]["macs"] == 0 and rows["fc2"]["macs_dense"] == 5_000


def test_breakdown_pairs_layer_macs_with_the_dense_model():
    dense, small = _lenets()
    part = latency_breakdown(dense, small, SHAPE, batch_sizes=(2,))["b2"]
    rows = {r["name"]: r for r in part["layers"]}
    assert rows["conv2"]["macs_dense"] == 1_600_000 and 0 < rows["conv2"]["macs"] < 1_600_000
    assert rows["relu1"]["macs"] == rows["relu1"]["macs_dense"] == 0


def _part(total, total_dense, layers):
    return {"total_ms": total, "total_ms_dense": total_dense,
            "layers": [dict(zip(("name", "ms", "ms_dense", "macs", "macs_dense"), row)) for row in layers]}


def test_reason_names_time_outside_mac_layers_when_it_dominates():
    part = _part(1.0, 4.0, [("conv", 0.2, 2.0, 100, 1000), ("pool", 0.7, 1.5, 0, 0)])
    reason = latency_reason(part)
    assert reason.startswith("80% of the compressed forward (0.800 of 1.000 ms CPU) is outside MAC layers")
    assert "pool alone 0.700 ms" in reason
    assert "the MAC layers got 10.0x faster for 10.0x fewer MACs" in reason
    assert "conv takes 20% of it with 10% of its MACs kept" in reason


def test_reason_names_the_mac_layer_that_kept_its_time():
    part = _part(1.0, 3.0, [("conv1", 0.6, 0.7, 900, 1000), ("conv2", 0.3, 2.2, 100, 2000), ("relu", 0.05, 0.05, 0, 0)])
    reason = latency_reason(part)
    assert reason.startswith("the MAC layers got 3.2x faster for 3.0x fewer MACs; conv1 takes 60% of it with 90%")


def test_explain_latency_only_for_records_whose_macs_fell():
    dense, small = _lenets()
    flat = {"macs": 1000, "macs_dense": 1050, "latency_ms_b1": 1.0, "latency_ms_b1_dense": 1.0}
    assert latency_efficiency(flat) == {} and explain_latency(flat, dense, small, SHAPE) == {}
    rec = {"macs": 100, "macs_dense": 1000, "latency_ms_b1": 1.0, "latency_ms_b1_dense": 2.0,
           "latency_ms_b64": 1.0, "latency_ms_b64_dense": 9.0}
    eff = latency_efficiency(rec)
    assert eff == {"b1": 0.2, "b64": 0.9}
    extra = explain_latency(rec, dense, small, SHAPE)
    assert set(extra["latency_reason"]) == {"b1", "b64"} and extra["latency_efficiency"] == eff
    assert "MAC layers got" in extra["latency_reason"]["b1"]


def _record(seed, reason=None):
    rec = {"task": "t", "method": "m", "model": "lenet5", "seed": seed, "_variant": "compare-m",
           "macs": 100, "macs_dense": 1000, "latency_ms_b1": 1.0, "latency_ms_b1_dense": 2.0,
           "latency_ms_b64": 1.0, "latency_ms_b64_dense": 9.0}
    if reason:
        rec["extra"] = {"latency_reason": reason}
    return rec


def test_render_prints_the_measured_reason_for_the_failing_batch_size():
    lines = render.latency_checks([_record(1, {"b1": "conv1 kept it", "b64": "not shown"}), _record(0)])
    assert len(lines) == 1
    assert "measured (seed 1) — b1: conv1 kept it" in lines[0]
    assert "not shown" not in lines[0]  # b64 (0.9 of the cut) passes the floor
    fallback = render.latency_checks([_record(0)])
    assert "not explained by the record" in fallback[0]


def test_render_names_a_seed_under_the_floor_when_the_mean_passes():
    """Every result must clear the floor: a slow seed hidden by a fast mean still gets its own line."""
    slow = _record(0, {"b1": "glue kept it"})
    slow.update(latency_ms_b1=3.0)  # 0.67x at b1 for 10x fewer MACs
    fast = [_record(s) for s in (1, 2)]
    for rec in fast:
        rec.update(latency_ms_b1=0.1)  # 20x
    lines = render.latency_checks([slow, *fast])
    assert len(lines) == 1
    assert "seed 0 (the mean over 3 seeds passes)" in lines[0] and "b1: glue kept it" in lines[0]
    assert render.latency_checks(fast) == []
