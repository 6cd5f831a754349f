"""Plot of an identity probe: residual norm, CKA and lesion per block, thresholds, effective depth and bound."""

from __future__ import annotations

from pathlib import Path

from netrazor.io import atomic_path
from netrazor.methods.ebcle.probe import ProbeReport


def plot_probe(report: ProbeReport, path: str | Path, bound_blocks: float | None = None, title: str = "") -> Path:
    """Write a PNG (matplotlib, Agg backend) of ``report``; ``bound_blocks`` draws the rule's bound
    converted to blocks as a vertical line. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = [r["index"] for r in report.rows]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(idx, [r["cka"] for r in report.rows], "o-", label="CKA(prev, out)")
    res = [(r["index"], r["residual"]) for r in report.rows if r["residual"] is not None]
    if res:
        ax.plot([i for i, _ in res], [v for _, v in res], "s-", label="||F(x)|| / ||x||")
        ax.axhline(report.residual_threshold, color="C1", ls=":", lw=1)
    ax.axhline(report.cka_threshold, color="C0", ls=":", lw=1)
    les = [(r["index"], r["lesion"]) for r in report.rows if r.get("lesion") is not None]
    if les:
        ax.plot([i for i, _ in les], [max(0.0, v) for _, v in les], "^-", color="C2", label="lesion Δacc")
    for r in report.rows:
        if r["identity_like"]:
            ax.axvspan(r["index"] - 0.5, r["index"] + 0.5, color="0.9", zorder=0)
    ax.axvline(report.effective_depth + 0.5, color="k", lw=1.5, label=f"effective depth = {report.effective_depth}")
    if bound_blocks is not None:
        ax.axvline(bound_blocks + 0.5, color="C3", ls="--", lw=1.5, label=f"EBCLE bound ≈ {bound_blocks:g} blocks")
    ax.set_xlabel("block (grey: identity-like)")
    ax.set_ylim(bottom=0)
    ax.set_title(title or "identity probe")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
