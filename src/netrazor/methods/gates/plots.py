"""Plots of a gates run (matplotlib, Agg): θ trajectories and structures kept per layer."""

from __future__ import annotations

from pathlib import Path

from netrazor.io import atomic_path


def save_plots(record: dict, folder: Path, max_lines: int = 40) -> list[Path]:
    """Write ``gates-theta.png`` and ``gates-widths.png`` into ``folder``; return their paths.

    θ trajectories: for each gate set, up to ``max_lines`` gates (evenly spaced among the
    original ones), a removed gate's line ends at 0 where it was removed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    traj = record.get("theta_trajectory") or []
    sets = list(record.get("gate_sets", {}))
    paths = []

    fig, axes = plt.subplots(1, max(1, len(sets)), figsize=(4 * max(1, len(sets)), 3.2), squeeze=False)
    for ax, name in zip(axes[0], sets):
        dense = record["gate_sets"][name]["width_dense"]
        pick = sorted(set(range(0, dense, max(1, dense // max_lines))))
        series = {i: ([], []) for i in pick}
        for snap in traj:
            kept = snap["kept"].get(name)
            theta = snap["theta"].get(name)
            where = {k: j for j, k in enumerate(kept)} if kept is not None else {}
            for i in pick:
                xs, ys = series[i]
                if i in where:
                    xs.append(snap["step"]), ys.append(theta[where[i]])
                elif ys and ys[-1] != 0.0:
                    xs.append(snap["step"]), ys.append(0.0)
        for xs, ys in series.values():
            ax.plot(xs, ys, lw=0.6, alpha=0.6)
        ax.set_title(f"θ of {name}")
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    path = folder / "gates-theta.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    paths.append(path)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name in sets:
        xs = [s["step"] for s in traj if name in s["kept"]]
        ys = [len(s["kept"][name]) for s in traj if name in s["kept"]]
        ax.plot(xs, ys, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("structures kept")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = folder / "gates-widths.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    paths.append(path)
    return paths
