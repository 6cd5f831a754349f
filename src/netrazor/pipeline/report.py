"""The run report: a self-contained HTML page (plots inlined as PNG data URIs) and a Markdown twin.

Shows the stage table, the accuracy–size Pareto plot across runs, per-layer
width / density / bit-width charts, training curves and entropy profiles when
the stages recorded them. No external requests: no CDN, no fonts, no scripts.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from netrazor.errors import CheckpointError
from netrazor.io import atomic_write_text, read_json

STAGE_COLUMNS = (
    ("kind", "stage"),
    ("params", "params"),
    ("nonzero", "non-zeros"),
    ("macs", "MACs"),
    ("bytes", "bytes"),
    ("latency_ms_b1", "latency b1 (ms)"),
    ("latency_ms_b64", "latency b64 (ms)"),
    ("val_error", "val error (%)"),
    ("seconds", "seconds"),
)
PERCENT_COLUMNS = {"val_error"}


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
    return html.escape(str(value))


def _cell(row: dict, key: str) -> str:
    value = row.get(key)
    if key in PERCENT_COLUMNS and isinstance(value, float):
        return f"{100 * value:.2f}"
    return _fmt(value)


def stage_rows(state: dict) -> list[dict]:
    rows = []
    completed = state.get("completed", [])
    if completed:
        rows.append({"kind": "start", **completed[0]["before"], "seconds": None})
    for entry in completed:
        row = {"kind": entry["kind"], **entry["after"], "seconds": entry.get("seconds")}
        rows.append(row)
    return rows


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(state: dict, summary: dict, all_summaries: list[dict]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    plots: list[tuple[str, str]] = []
    # Accuracy-size plot: this run's stages as a path (val error), other runs' final models (test error).
    completed = state.get("completed", [])
    path = [(e["after"].get("params"), e["after"].get("val_error"), f"{e['index']}:{e['kind']}") for e in completed]
    path = [p for p in path if p[0] and p[1] is not None]
    others = [(s["final"].get("params"), s.get("test_error"), s.get("recipe")) for s in all_summaries
              if s is not summary and s.get("final") and s["final"].get("params") and s.get("test_error") is not None]
    if path or others:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        if path:
            ax.plot([p[0] for p in path], [100 * p[1] for p in path], "-o", c="tab:red", label="this run, after each stage (val)")
            for params, err, name in path:
                ax.annotate(name, (params, 100 * err), fontsize=6)
        if others:
            ax.scatter([o[0] for o in others], [100 * o[1] for o in others], c="tab:blue", s=18, label="other runs, final (test)")
            for params, err, name in others:
                ax.annotate(name, (params, 100 * err), fontsize=6)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap on a log axis
        ax.set_xlabel("parameters")
        ax.set_ylabel("error (%)")
        ax.set_title("accuracy vs size")
        ax.legend(fontsize=7)
        fig.tight_layout()
        plots.append(("Accuracy–size: this run's stages and other runs", _png(fig)))
    # Per-layer width / density / bits after each stage.
    profiles = [(e["kind"], e.get("layers_after") or e["after"].get("layer_profile")) for e in completed]
    first = completed[0]["before"].get("layer_profile") if completed else None
    if first:
        profiles.insert(0, ("start", first))
    profiles = [(k, p) for k, p in profiles if p]
    if profiles:
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
        for kind, prof in profiles:
            names = [r["name"] for r in prof]
            axes[0].plot(names, [r["width"] for r in prof], marker="o", label=kind)
            axes[1].plot(names, [r["density"] for r in prof], marker="o", label=kind)
            if any(r.get("bits") for r in prof):
                axes[2].plot(names, [r.get("bits") or 32 for r in prof], marker="o", label=kind)
        for ax, title in zip(axes, ("width (units / filters)", "weight density", "bits")):
            ax.set_title(title)
            ax.tick_params(axis="x", rotation=60, labelsize=6)
        axes[0].set_yscale("log")
        axes[1].set_ylim(0, 1.05)  # density is a fraction: a dense model's flat line sits at the top
        axes[0].legend(fontsize=6)
        fig.tight_layout()
        plots.append(("Per-layer width, density and bit-width after each stage", _png(fig)))
    # Training curves of every stage that trained.
    curves = [(e["kind"], e["index"], e["record"].get("history")) for e in completed if isinstance(e.get("record"), dict)]
    curves = [(k, i, h) for k, i, h in curves if isinstance(h, list) and h and isinstance(h[0], dict)]
    if curves:
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        for kind, index, hist in curves:
            xs = [h.get("epoch", n) for n, h in enumerate(hist)]
            if any("val_acc" in h for h in hist):
                ax.plot(xs, [100 * (1 - h.get("val_acc", float("nan"))) for h in hist], marker=".", label=f"{index}:{kind} val")
        ax.set_xlabel("epoch")
        ax.set_ylabel("val error (%)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        plots.append(("Training curves", _png(fig)))
    # Entropy profiles recorded by entropy-guided stages.
    for entry in completed:
        ent = entry.get("record", {}).get("entropy") if isinstance(entry.get("record"), dict) else None
        if isinstance(ent, dict) and ent and all(isinstance(v, (int, float)) for v in ent.values()):
            fig, ax = plt.subplots(figsize=(5.5, 3.2))
            ax.bar(range(len(ent)), list(ent.values()))
            ax.set_xticks(range(len(ent)), list(ent), rotation=60, fontsize=6)
            ax.set_ylabel("layer entropy (bits)")
            fig.tight_layout()
            plots.append((f"Rectifier entropy ({entry['index']}:{entry['kind']})", _png(fig)))
    return plots


def _load_run(run_dir: Path) -> tuple[dict, dict]:
    state_path = run_dir / "state.json"
    if not state_path.exists():
        raise CheckpointError(f"{run_dir} is not a compress run (no state.json); give the folder `netrazor compress` printed.")
    state = read_json(state_path)
    summary_path = run_dir / "summary.json"
    summary = read_json(summary_path) if summary_path.exists() else {"recipe": state["recipe"].get("name"), "final": {}}
    return state, summary


def write_report(run_dir: str | Path, runs_root: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into ``run_dir``; returns both paths."""
    run_dir = Path(run_dir)
    state, summary = _load_run(run_dir)
    root = Path(runs_root) if runs_root else run_dir.parent
    all_summaries = []
    for path in sorted(root.glob("*/summary.json")):
        try:
            s = read_json(path)
        except CheckpointError:
            continue
        if path.parent.resolve() == run_dir.resolve():
            s = summary
        all_summaries.append(s)
    if summary not in all_summaries:
        all_summaries.append(summary)
    rows = stage_rows(state)
    plots = _plots(state, summary, all_summaries)
    title = f"netrazor report — {summary.get('recipe')}"
    headline = _headline(summary)

    table = ["<table><tr>" + "".join(f"<th>{h}</th>" for _, h in STAGE_COLUMNS) + "</tr>"]
    for row in rows:
        table.append("<tr>" + "".join(f"<td>{_cell(row, k)}</td>" for k, _ in STAGE_COLUMNS) + "</tr>")
    table.append("</table>")
    body = [f"<h1>{html.escape(title)}</h1>", f"<p class='headline'>{html.escape(headline)}</p>", "<h2>Stages</h2>", *table]
    for caption, data in plots:
        body.append(f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>")
    body.append("<h2>Recipe</h2><pre>" + html.escape(_yaml(state["recipe"])) + "</pre>")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "th{background:#f3f3f3}img{max-width:100%}.headline{font-size:1.1em;font-weight:bold}"
        "</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )
    html_path = run_dir / "report.html"
    atomic_write_text(html_path, page)

    md = [f"# {title}", "", headline, "", "| " + " | ".join(h for _, h in STAGE_COLUMNS) + " |", "|" + "---|" * len(STAGE_COLUMNS)]
    for row in rows:
        md.append("| " + " | ".join(_cell(row, k) for k, _ in STAGE_COLUMNS) + " |")
    md += ["", f"Plots: see `{html_path.name}` ({len(plots)} inlined)."]
    md_path = run_dir / "report.md"
    atomic_write_text(md_path, "\n".join(md) + "\n")
    return html_path, md_path


def _headline(summary: dict) -> str:
    dense, final = summary.get("dense") or {}, summary.get("final") or {}
    parts = []
    if dense.get("params") and final.get("params"):
        parts.append(f"params {dense['params']:,} → {final['params']:,} ({dense['params'] / final['params']:.1f}×)")
    if dense.get("macs") and final.get("macs"):
        parts.append(f"MACs {dense['macs']:,} → {final['macs']:,} ({dense['macs'] / final['macs']:.1f}×)")
    if dense.get("bytes") and summary.get("bytes"):
        parts.append(f"compressed from {dense['bytes']:,} bytes to {summary['bytes']:,} bytes ({dense['bytes'] / summary['bytes']:.1f}×)")
    if summary.get("test_error") is not None:
        parts.append(f"test error {100 * summary['test_error']:.2f} %")
    return "; ".join(parts) or "run in progress"


def _yaml(obj: dict) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)
