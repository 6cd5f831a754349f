"""Render ``benchmarks/RESULTS.md`` (tables + Pareto plots) from ``benchmarks/results/**/*.json``.

Nothing here measures: every number comes from a record a benchmark run wrote.
Usage: ``python -m benchmarks.render [--results DIR] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from netrazor.io import atomic_write_text

HERE = Path(__file__).resolve().parent

COLUMNS = (
    ("method", "method"),
    ("seeds", "seeds"),
    ("test_error", "test error"),
    ("test_error_dense", "dense error"),
    ("params", "params"),
    ("params_ratio", "params ×"),
    ("macs", "MACs"),
    ("macs_ratio", "MACs ×"),
    ("bytes", "bytes"),
    ("bytes_ratio", "bytes ×"),
    ("latency_ratio_b1", "latency b1 ×"),
    ("latency_ratio_b64", "latency b64 ×"),
    ("layers", "layers"),
    ("train_seconds", "train s"),
    ("compress_seconds", "compress s"),
)


def load_records(results_dir: Path) -> list[dict]:
    records = []
    for path in sorted(results_dir.glob("*/*.json")):
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "task" in rec and "method" in rec:
            rec["_path"] = str(path.relative_to(results_dir.parent))
            extra = rec.get("extra") if isinstance(rec.get("extra"), dict) else {}
            rec["_quick"] = bool(extra.get("quick")) or path.stem.endswith("-quick")
            # Records of one configuration differ only in their seed: group by the file name without it.
            rec["_variant"] = re.sub(r"-seed\d+", "", path.stem)
            records.append(rec)
    return records


def _ratio(dense, value):
    if isinstance(dense, (int, float)) and isinstance(value, (int, float)) and value:
        return dense / value
    return None


def _derived(rec: dict) -> dict:
    out = dict(rec)
    out["params_ratio"] = _ratio(rec.get("params_dense"), rec.get("params"))
    out["macs_ratio"] = _ratio(rec.get("macs_dense"), rec.get("macs"))
    out["bytes_ratio"] = _ratio(rec.get("bytes_dense"), rec.get("bytes"))
    out["latency_ratio_b1"] = _ratio(rec.get("latency_ms_b1_dense"), rec.get("latency_ms_b1"))
    out["latency_ratio_b64"] = _ratio(rec.get("latency_ms_b64_dense"), rec.get("latency_ms_b64"))
    return out


def _fmt(values: list, percent: bool = False) -> str:
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not nums:
        return "—"
    if percent:  # error fractions read best as percentages with two decimals
        nums = [100 * v for v in nums]
    one = (lambda x: f"{x:.2f} %") if percent else _fmt_one
    mean = statistics.fmean(nums)
    spread = statistics.stdev(nums) if len(nums) > 1 else 0.0
    return one(mean) if spread == 0 else f"{one(mean)} ± {one(spread)}"


def _fmt_one(x: float) -> str:
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 0.1:
        return f"{x:.2f}"
    return f"{x:.4f}"


def table_rows(records: list[dict]) -> list[list[str]]:
    """One row per configuration (record name without its seed) of a task, mean ± std over seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        groups[(rec.get("_variant", rec["method"]), rec.get("model", ""))].append(_derived(rec))
    rows = []
    for (method, model), recs in sorted(groups.items()):
        row = []
        for key, _ in COLUMNS:
            if key == "method":
                row.append(f"{method} ({model})" if model else method)
            elif key == "seeds":
                row.append(",".join(str(r.get("seed")) for r in recs))
            else:
                row.append(_fmt([r.get(key) for r in recs], percent=key.endswith("error") or key.endswith("error_dense")))
        rows.append(row)
    return rows


# Issue 10: a result's measured latency speed-up should be >= 0.7x its MACs reduction.
LATENCY_EFFICIENCY_FLOOR = 0.7
# Below this dense batch-1 latency, per-call framework overhead rather than arithmetic sets the time.
OVERHEAD_BOUND_MS = 0.1
# A MAC cut under this is too small for its latency to say anything (timing noise is larger).
MIN_MACS_CUT = 1.1


def latency_checks(records: list[dict]) -> list[str]:
    """One line per configuration whose latency speed-up is under 0.7x its MACs reduction, saying
    by how much and, where the records show it, why (the "fewer MACs, same latency" check). The issue
    asks it of every result, so a configuration whose mean passes still gets a line naming each seed under it."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        groups[(rec.get("_variant", rec["method"]), rec.get("model", ""))].append(_derived(rec))
    lines = []
    for (method, model), recs in sorted(groups.items()):
        macs = _mean([r.get("macs_ratio") for r in recs])
        if macs is None or macs < MIN_MACS_CUT:  # nothing (or almost nothing) cut: nothing to check
            continue
        label = f"`{method}{f' ({model})' if model else ''}`"
        speedups = {b: _mean([r.get(f"latency_ratio_{b}") for r in recs]) for b in ("b1", "b64")}
        low = _under_floor(speedups, macs)
        if low:
            lines.append(f"- {label}: {_shortfall(speedups, macs)} — {_why_slow(recs, low)}.")
            continue
        for rec in sorted(recs, key=lambda r: r.get("seed", 0)):
            own = {b: rec.get(f"latency_ratio_{b}") for b in ("b1", "b64")}
            rec_macs = rec.get("macs_ratio")
            rec_low = _under_floor(own, rec_macs) if rec_macs and rec_macs >= MIN_MACS_CUT else []
            if rec_low:
                lines.append(f"- {label}, seed {rec.get('seed', 0)} (the mean over {len(recs)} seeds passes): "
                             f"{_shortfall(own, rec_macs)} — {_why_slow([rec], rec_low)}.")
    return lines


def _under_floor(speedups: dict, macs: float) -> list[str]:
    """The batch sizes whose speed-up is under the floor's share of the MAC cut."""
    return [b for b, v in speedups.items() if v is not None and v / macs < LATENCY_EFFICIENCY_FLOOR]


def _shortfall(speedups: dict, macs: float) -> str:
    got = ", ".join(f"{b} {v:.2f}×" for b, v in speedups.items() if v is not None)
    share = " / ".join(f"{b} {v / macs:.2f}" for b, v in speedups.items() if v is not None)
    return f"latency {got} for {macs:.2f}× fewer MACs ({share} of the MAC cut; floor {LATENCY_EFFICIENCY_FLOOR})"


def _why_slow(recs: list[dict], low: list[str]) -> str:
    """The recorded reason, else what the dense latency says (overhead-bound), else that nothing explains it."""
    dense_b1 = _mean([r.get("latency_ms_b1_dense") for r in recs])
    recorded = _recorded_reason(recs, low)
    if recorded:
        return recorded
    if dense_b1 is not None and dense_b1 < OVERHEAD_BOUND_MS and low == ["b1"]:
        return (f"the dense model runs in {dense_b1:.3f} ms at batch 1, where fixed per-layer call overhead, "
                "not arithmetic, sets the time; at batch 64 the cut shows")
    if dense_b1 is not None and dense_b1 < OVERHEAD_BOUND_MS:
        return f"overhead-bound model (dense batch-1 latency {dense_b1:.3f} ms)"
    return "not explained by the record (see the method's notes in docs/methods/)"


def _recorded_reason(recs: list[dict], batches: list[str]) -> str | None:
    """The reason a benchmark measured and stored (``extra.latency_reason``, per batch size), lowest seed first."""
    for rec in sorted(recs, key=lambda r: r.get("seed", 0)):
        reasons = (rec.get("extra") or {}).get("latency_reason") or {}
        found = [f"{b}: {reasons[b]}" for b in batches if reasons.get(b)]
        if found:
            return f"measured (seed {rec.get('seed')}) — " + "; ".join(found)
    return None


# Issue 10: at equal test error, netrazor's bytes should be >= 2x smaller than the Deep-Compression pipeline's.
# (netrazor configuration, the Deep-Compression curve given the same training, what "the same" means)
# (a family ending in "-s*" takes only its sparsity-sweep records: the sweep's deep-compression trains as
# many epochs as the chain, the default harness run's does not)
EQUAL_ERROR_PAIRS = (
    ("compare-gates+evolution+pack-s*", "compare-deep-compression-s*", "same fine-tuning epochs as the chain (`compare --sparsities`)"),
    ("gates+evolution+quantise+pack", "compare-deep-compression-recipe-budget-s*",
     "as many epochs in all as the shipped recipe (`compare --dc-budget recipe --sparsities`)"),
)
SWEEP_SUFFIX = re.compile(r"-s(?P<sparsity>[0-9.]+)$")


def _points(records: list[dict], family: str) -> dict[int, list[tuple[float | None, float, float]]]:
    """``{seed: [(sparsity or None, test_error, bytes)]}`` of the records of ``family``: a variant name, or
    ``<name>-s*`` for the records of a sparsity sweep of ``<name>``."""
    sweep = family.endswith("-s*")
    family = family.removesuffix("-s*")
    out: dict[int, list] = defaultdict(list)
    for rec in records:
        variant = rec.get("_variant", "")
        m = SWEEP_SUFFIX.search(variant)
        base, sparsity = (variant[: m.start()], float(m["sparsity"])) if m else (variant, None)
        if base == family and (m is not None) == sweep and isinstance(rec.get("test_error"), (int, float)) and isinstance(rec.get("bytes"), (int, float)):
            out[rec.get("seed", 0)].append((sparsity, rec["test_error"], rec["bytes"]))
    return out


def bytes_at_error(curve: list[tuple], error: float) -> tuple[float | None, str]:
    """Bytes the curve ``[(sparsity, error, bytes)]`` needs at ``error``: its Pareto frontier (a point
    stays only if it is smaller than every point with a lower error) interpolated log-linearly between
    the two neighbouring points. Outside the measured errors: ``(None, why)``."""
    frontier: list[tuple[float, float]] = []
    for e, b in sorted((e, b) for _, e, b in curve):
        if not frontier or b < frontier[-1][1]:
            frontier.append((e, b))
    errors = [e for e, _ in frontier]  # strictly increasing: an equal error with more bytes is dropped
    if not frontier or error < errors[0]:
        return None, "lower than any measured point"
    if error > errors[-1]:
        return None, "higher than any measured point"
    i = bisect.bisect_left(errors, error)
    if errors[i] == error:
        return frontier[i][1], "measured"
    (e0, b0), (e1, b1) = frontier[i - 1], frontier[i]
    t = (error - e0) / (e1 - e0)
    return b0 ** (1 - t) * b1 ** t, "interpolated"


def equal_error_bytes(records: list[dict]) -> list[str]:
    """Per netrazor point and seed: the Deep-Compression bytes (same seed, same training) at its test error."""
    lines = []
    for ours_family, dc_family, how_matched in EQUAL_ERROR_PAIRS:
        ours, dc = _points(records, ours_family), _points(records, dc_family)
        seeds = sorted(set(ours) & set(dc))
        if not seeds:
            continue
        lines.append(f"`{ours_family.removesuffix('-s*')}` vs `{dc_family.removesuffix('-s*')}` — {how_matched}:")
        lines.append("")
        for seed in seeds:
            for sparsity, error, size in sorted(ours[seed], key=lambda p: (p[0] is None, p[0] or 0)):
                at = f" at sparsity {sparsity:g}" if sparsity is not None else ""
                need, how = bytes_at_error(dc[seed], error)
                if need is not None:
                    what = f"deep-compression needs {need:,.0f} B there ({how}): **{need / size:.2f}×** ours"
                elif how.startswith("lower"):
                    best = min(dc[seed], key=lambda p: p[1])
                    what = (f"deep-compression never reached it (its lowest: {100 * best[1]:.2f} % at {best[2]:,.0f} B, "
                            f"{best[2] / size:.2f}× ours)")
                else:
                    what = "above deep-compression's measured errors"
                lines.append(f"- seed {seed}{at}: {100 * error:.2f} % test error at {size:,.0f} B; {what}.")
        lines.append("")
    return lines


# (method, baseline) whose records carry ``extra.curve`` (one point per sparsity) from the same dense
# model and fine-tuning epochs per seed: issue 7's "DE at least as accurate as magnitude pruning".
PAIRED_CURVES = (("evolution", "magnitude"),)
# Non-inferiority margin of the paired test-error difference, in points: about one DE run's own
# re-run noise (re-running a point with identical inputs moved it by 0.1-0.2 pt; docs/methods/evolution.md).
NONINFERIORITY_MARGIN_PT = 0.1


def _curve_errors(records: list[dict], variant: str) -> dict[int, dict[float, tuple[float, float]]]:
    """``{seed: {sparsity: (test_error, val_error)}}`` from the ``extra.curve`` of ``variant``'s records."""
    out: dict[int, dict] = defaultdict(dict)
    for rec in records:
        curve = (rec.get("extra") or {}).get("curve")
        if rec.get("_variant") != variant or not isinstance(curve, list):
            continue
        for point in curve:
            if all(isinstance(point.get(k), (int, float)) for k in ("sparsity", "test_error", "val_error")):
                out[rec.get("seed", 0)][round(point["sparsity"], 6)] = (point["test_error"], point["val_error"])
    return out


def paired_curve_rows(records: list[dict]) -> list[str]:
    """Per sparsity: ours − baseline test/val error in points, paired by seed, mean ± std and the one-sided
    95 % upper confidence bound of the mean test difference (Student t over seeds)."""
    lines = []
    for ours_name, base_name in PAIRED_CURVES:
        ours, base = _curve_errors(records, ours_name), _curve_errors(records, base_name)
        sparsities = sorted({s for seed in set(ours) & set(base) for s in set(ours[seed]) & set(base[seed])})
        if not sparsities:
            continue
        lines += [f"_`{ours_name}` − `{base_name}`, paired by seed (same dense model and fine-tuning epochs; points, "
                  f"negative = {ours_name} more accurate; upper bound: one-sided 95 %, Student t; "
                  f"non-inferior when it is under +{NONINFERIORITY_MARGIN_PT:g} pt):_", "",
                  "| sparsity | seeds | test Δ per seed | test Δ mean ± std | upper bound | val Δ mean ± std | reading |",
                  "|---|---|---|---|---|---|---|"]
        for sp in sparsities:
            seeds = sorted(seed for seed in set(ours) & set(base) if sp in ours[seed] and sp in base[seed])
            test = paired_difference([100 * (ours[s][sp][0] - base[s][sp][0]) for s in seeds])
            val = paired_difference([100 * (ours[s][sp][1] - base[s][sp][1]) for s in seeds])
            lines.append(f"| {sp:g} | {', '.join(map(str, seeds))} | {test['per_seed']} | {test['mean']} | {test['bound']} | "
                         f"{val['mean']} | {test['reading']} |")
        lines.append("")
    return lines


def paired_difference(diffs: list[float]) -> dict[str, str]:
    """Paired differences in points (ours − theirs, one per seed) as table cells: per seed, mean ± std, the
    one-sided 95 % upper bound of the mean (Student t) and its reading: "better" when the bound is under 0,
    "non-inferior" when under the margin, else "not shown"; one seed bounds nothing."""
    mean = statistics.fmean(diffs)
    cells = {"per_seed": " / ".join(f"{d:+.2f}" for d in diffs)}
    if len(diffs) < 2:
        return {**cells, "mean": f"{mean:+.2f}", "bound": "—", "reading": "one seed"}
    from scipy import stats

    sd = statistics.stdev(diffs)
    upper = mean + stats.t.ppf(0.95, len(diffs) - 1) * sd / len(diffs) ** 0.5
    reading = "better" if upper < 0 else "non-inferior" if upper < NONINFERIORITY_MARGIN_PT else "not shown"
    return {**cells, "mean": f"{mean:+.2f} ± {sd:.2f}", "bound": f"{upper:+.2f}", "reading": reading}


# Issue 10: at equal MACs (±5 %) netrazor's best recipe at least as accurate as Torch-Pruning on every task.
# compare.py prunes each Torch-Pruning contender to the MACs of the gates run it sits beside (same tag, seed).
EQUAL_MACS_REFERENCE = "compare-gates"
EQUAL_MACS_CONTENDERS = ("compare-torch-pruning-magnitude", "compare-torch-pruning-taylor")


def equal_macs_rows(records: list[dict]) -> list[str]:
    """Per gates setting (``compare --tag``): gates' test error against each Torch-Pruning run pruned to its
    MACs, paired by seed (points; negative = gates more accurate), and how far each landed from its MACs."""
    by_name = {(rec.get("_variant"), rec.get("seed", 0)): rec for rec in records}
    tags = sorted({v.removeprefix(EQUAL_MACS_REFERENCE) for v, _ in by_name if v.startswith(EQUAL_MACS_REFERENCE)
                   and v.removeprefix(EQUAL_MACS_REFERENCE)[:1] in ("", "-")})
    rows = []
    for tag in tags:
        for contender in EQUAL_MACS_CONTENDERS:
            pairs = [(by_name[(EQUAL_MACS_REFERENCE + tag, seed)], by_name[(v, seed)])
                     for v, seed in sorted(by_name) if v == contender + tag and (EQUAL_MACS_REFERENCE + tag, seed) in by_name]
            pairs = [(g, t) for g, t in pairs if all(isinstance(r.get("test_error"), (int, float)) for r in (g, t))]
            if not pairs:
                continue
            d = paired_difference([100 * (g["test_error"] - t["test_error"]) for g, t in pairs])
            off = " / ".join(f"{100 * (t['macs'] / g['macs'] - 1):+.1f} %" for g, t in pairs)
            errors = " / ".join(f"{100 * g['test_error']:.2f} vs {100 * t['test_error']:.2f}" for g, t in pairs)
            cut = statistics.fmean(g["macs_dense"] / g["macs"] for g, _ in pairs if g.get("macs") and g.get("macs_dense"))
            rows.append(f"| gates{tag} | {contender.removeprefix('compare-')} | {', '.join(str(g.get('seed', 0)) for g, _ in pairs)} "
                        f"| {cut:.2f}× | {off} | {errors} | {d['mean']} | {d['bound']} | {d['reading']} |")
    if not rows:
        return []
    return ["_Equal MACs: gates against Torch-Pruning pruned to gates' MACs (same dense model, seed and fine-tuning "
            "epochs); test error in %, difference gates − Torch-Pruning in points, paired by seed (negative = gates "
            f"more accurate; upper bound one-sided 95 %, Student t; non-inferior under +{NONINFERIORITY_MARGIN_PT:g} pt):_",
            "", "| gates setting | against | seeds | MACs cut | MACs off | test error per seed (gates vs them) "
            "| Δ mean ± std | upper bound | reading |", "|---|---|---|---|---|---|---|---|---|", *rows, ""]


def _mean(values: list):
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.fmean(nums) if nums else None


def pareto_plot(task: str, records: list[dict], out_dir: Path) -> list[str]:
    """Accuracy vs MACs / bytes / latency scatter plots for a task; returns the PNG names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for xkey, label in (("macs", "MACs"), ("bytes", "bytes"), ("latency_ms_b1", "latency b1 (ms)")):
        pts = [(r[xkey], r["test_error"], r["method"]) for r in records
               if isinstance(r.get(xkey), (int, float)) and isinstance(r.get("test_error"), (int, float))]
        if len(pts) < 2:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for method in sorted({p[2] for p in pts}):
            xs = [p[0] for p in pts if p[2] == method]
            ys = [100 * p[1] for p in pts if p[2] == method]
            ax.scatter(xs, ys, label=method, s=18)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test error (%)")
        ax.set_title(task)
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"{task}-{xkey}.png"
        out_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written


def render(results_dir: Path, out: Path, plots: bool = True) -> str:
    records = load_records(results_dir)
    by_task: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        by_task[rec["task"]].append(rec)
    lines = [
        "# netrazor benchmark results",
        "",
        "Rendered by `python -m benchmarks.render` from the JSON records under `benchmarks/results/`;",
        "each record names its command, seed, commit and machine. Ratios (×) are dense ÷ compressed,",
        "measured in the same run. Values are mean ± std over seeds.",
        "",
    ]
    if not records:
        lines.append("_No records yet: run `make bench`._")
    for task in sorted(by_task):
        recs = [r for r in by_task[task] if not r["_quick"]]
        smoke = [r for r in by_task[task] if r["_quick"]]
        lines += [f"## {task}", ""]
        for title, group in (("", recs), ("Smoke runs (`--quick`: tiny schedules, a check that it runs — not results)", smoke)):
            if not group:
                continue
            if title:
                lines += [f"_{title}_", ""]
            lines.append("| " + " | ".join(h for _, h in COLUMNS) + " |")
            lines.append("|" + "---|" * len(COLUMNS))
            for row in table_rows(group):
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
        equal = equal_error_bytes(recs)
        if equal:
            lines += ["_Bytes at equal test error (each deep-compression curve of the same seed, its Pareto frontier "
                      "interpolated log-linearly at netrazor's error):_", "", *equal]
        lines += equal_macs_rows(recs)
        lines += paired_curve_rows(recs)
        checks = latency_checks(recs)
        if checks:
            lines += ["_Latency speed-up under 0.7× the MACs reduction:_", "", *checks, ""]
        recs = recs or smoke
        if plots:
            for name in pareto_plot(task, recs, out.parent / "plots"):
                lines.append(f"![{name}](plots/{name})")
            lines.append("")
        lines.append("<details><summary>records</summary>")
        lines.append("")
        for rec in sorted(by_task[task], key=lambda r: (r["method"], r.get("seed", 0))):
            lines.append(f"- `{rec['_path']}` — `{rec.get('command', '?')}` — {rec.get('machine', '?')} — {rec.get('started_at', '?')} — commit {str(rec.get('commit', '?'))[:12]}")
        lines += ["", "</details>", ""]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out, text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    render(args.results, args.out, plots=not args.no_plots)


if __name__ == "__main__":
    main()
