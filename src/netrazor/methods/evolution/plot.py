"""Plot of teacher–student divergence vs density, from an ``EvolutionMethod`` record."""

from __future__ import annotations

import os

from netrazor.io import atomic_path


def plot_divergence_vs_density(record: dict, path: str | os.PathLike, title: str | None = None) -> None:
    """Save a PNG: divergence of the best committed set after each step (per layer, dots) and of the
    whole student after each cycle's fine-tune (line), against the overall density (log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    layers = sorted({s["layer"] for s in record["steps"]})
    floor = 1e-9  # log axis: a divergence of exactly 0 is drawn at the floor
    for name in layers:
        pts = [(s["overall_density"], max(floor, s["divergence"])) for s in record["steps"]
               if s["layer"] == name and s["committed"]]
        if pts:
            ax.scatter(*zip(*pts), s=10, label=f"step: {name}")
    cyc = [(c["overall_density"], max(floor, c["divergence"])) for c in record["cycles"]]
    if cyc:
        ax.plot(*zip(*cyc), "k-o", label="after fine-tune")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("density (fraction of weights kept)")
    ax.set_ylabel("divergence D(teacher ‖ student)")
    ax.set_title(title or "directed evolution")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
