"""benchmarks.render: Deep-Compression bytes at the chain's test error, from a sparsity sweep's records."""

from __future__ import annotations

import math

from benchmarks.render import bytes_at_error, equal_error_bytes


def _rec(method: str, sparsity: float, error: float, size: int, seed: int = 0) -> dict:
    return {"task": "t", "method": method, "seed": seed, "test_error": error, "bytes": size,
            "_variant": f"compare-{method}-s{sparsity:g}"}


def test_bytes_at_error_interpolates_log_linearly_between_neighbours():
    curve = [(0.95, 0.010, 16000), (0.98, 0.012, 8000), (0.99, 0.016, 4000)]
    need, how = bytes_at_error(curve, 0.011)
    assert how == "interpolated" and math.isclose(need, math.sqrt(16000 * 8000))
    assert bytes_at_error(curve, 0.016) == (4000, "measured")
    assert bytes_at_error(curve, 0.012) == (8000, "measured")  # an inner point, not only the last
    # a dominated point (more error AND more bytes than another) is not on the frontier
    assert bytes_at_error(curve + [(0.9, 0.013, 20000)], 0.011) == (need, how)
    assert bytes_at_error(curve, 0.009)[0] is None and bytes_at_error(curve, 0.02)[0] is None


def test_equal_error_bytes_pairs_seeds_and_states_the_ratio():
    records = [_rec("deep-compression", 0.95, 0.010, 16000), _rec("deep-compression", 0.98, 0.012, 8000),
               _rec("gates+evolution+pack", 0.98, 0.011, 2000), _rec("gates+evolution+pack", 0.99, 0.009, 1500),
               _rec("deep-compression", 0.95, 0.010, 16000, seed=1)]  # seed 1 has no chain: no line
    lines = equal_error_bytes(records)
    lines = [line for line in lines if line.startswith("- ")]
    assert len(lines) == 2
    ratio = math.sqrt(16000 * 8000) / 2000
    assert f"**{ratio:.2f}×**" in lines[0] and "sparsity 0.98" in lines[0]
    assert "never reached it" in lines[1] and "16,000 B" in lines[1]


def test_recipe_records_pair_with_the_recipe_budget_curve():
    records = [{"task": "t", "method": "gates+evolution+quantise+pack", "seed": 0, "test_error": 0.011, "bytes": 4000,
                "_variant": "gates+evolution+quantise+pack"},
               _rec("deep-compression-recipe-budget", 0.97, 0.010, 16000), _rec("deep-compression-recipe-budget", 0.98, 0.012, 8000)]
    lines = equal_error_bytes(records)
    assert any("recipe" in line for line in lines)
    (point,) = [line for line in lines if line.startswith("- ")]
    assert f"**{math.sqrt(16000 * 8000) / 4000:.2f}×**" in point


def _curve_rec(method: str, seed: int, points: dict) -> dict:
    curve = [{"sparsity": s, "test_error": t, "val_error": v} for s, (t, v) in points.items()]
    return {"task": "t", "method": method, "seed": seed, "_variant": method, "extra": {"curve": curve}}


def test_paired_curve_rows_pair_by_seed_and_read_the_upper_bound():
    from benchmarks.render import paired_curve_rows

    records = []
    for seed, (d50, d98) in enumerate([(0.0002, -0.007), (-0.0004, -0.006), (0.0001, -0.008)]):
        records.append(_curve_rec("magnitude", seed, {0.5: (0.08, 0.08), 0.98: (0.10, 0.10)}))
        records.append(_curve_rec("evolution", seed, {0.5: (0.08 + d50, 0.08), 0.98: (0.10 + d98, 0.10)}))
    records.append(_curve_rec("evolution", 7, {0.5: (0.0, 0.0)}))  # no baseline for seed 7: ignored
    rows = {line.split(" | ")[0].strip("| "): line for line in paired_curve_rows(records) if line.startswith("| 0.")}
    assert set(rows) == {"0.5", "0.98"}
    assert "0, 1, 2" in rows["0.5"] and "+0.02 / -0.04 / +0.01" in rows["0.5"]
    assert rows["0.5"].endswith("| non-inferior |")  # mean -0.003 pt, upper bound ~ +0.05 < 0.1
    assert rows["0.98"].endswith("| better |")
    # a consistent +0.3 pt loss is not shown non-inferior
    worse = [_curve_rec("magnitude", s, {0.9: (0.08, 0.08)}) for s in range(3)]
    worse += [_curve_rec("evolution", s, {0.9: (0.083 + 0.0002 * s, 0.08)}) for s in range(3)]
    (row,) = [line for line in paired_curve_rows(worse) if line.startswith("| 0.9")]
    assert row.endswith("| not shown |")


def test_equal_macs_rows_pair_gates_with_torch_pruning_by_tag_and_seed():
    from benchmarks.render import equal_macs_rows

    def rec(variant: str, seed: int, error: float, macs: int) -> dict:
        return {"task": "t", "method": variant, "seed": seed, "test_error": error, "macs": macs,
                "macs_dense": 2000, "_variant": variant}

    records = []
    for seed, (g, t) in enumerate([(0.070, 0.075), (0.071, 0.074), (0.069, 0.076)]):
        records += [rec("compare-gates", seed, g, 1000), rec("compare-torch-pruning-taylor", seed, t, 990)]
    records += [rec("compare-gates-k1.5", 0, 0.08, 500), rec("compare-torch-pruning-taylor-k1.5", 0, 0.07, 510),
                rec("compare-torch-pruning-magnitude", 5, 0.01, 1000)]  # no gates run of seed 5: not paired
    rows = {line.split(" | ")[0].strip("| "): line for line in equal_macs_rows(records) if line.startswith("| gates") and "setting" not in line}
    assert set(rows) == {"gates", "gates-k1.5"}
    assert "| 0, 1, 2 | 2.00× | -1.0 % / -1.0 % / -1.0 % |" in rows["gates"] and rows["gates"].endswith("| better |")
    assert "7.00 vs 7.50" in rows["gates"]
    assert "| 0 | 4.00× | +2.0 % | 8.00 vs 7.00 | +1.00 | — | one seed |" in rows["gates-k1.5"]
    assert equal_macs_rows([rec("compare-gates", 0, 0.07, 1000)]) == []
