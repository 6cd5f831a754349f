"""Plots of rectifier entropy: one bar per layer, optionally the per-channel spread."""

from __future__ import annotations

import os
from typing import Mapping

from netrazor.io import atomic_path
from netrazor.methods.entropy_depth.entropy import LayerEntropy


def plot_entropy(entropies: Mapping[str, LayerEntropy], path: str | os.PathLike, *, per_channel: bool = False, title: str | None = None) -> None:
    """Write a bar chart of H_l per rectifier (bits) to ``path`` (format from the suffix).

    ``per_channel=True`` adds a second panel with every channel's H_c as dots over its layer.
    Linear layers (H_l = 0) are drawn in grey. The file is written atomically.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(entropies)
    values = [entropies[n].entropy for n in names]
    colours = ["#999999" if v == 0 else "#2a6fb0" for v in values]
    rows = 2 if per_channel else 1
    fig, axes = plt.subplots(rows, 1, figsize=(max(6.0, 0.45 * len(names) + 2), 3.2 * rows), squeeze=False)
    ax = axes[0][0]
    ax.bar(range(len(names)), values, color=colours)
    ax.set_ylabel("layer entropy H_l (bits)")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_title(title or "rectifier state entropy per layer (grey: linear, H_l = 0)")
    if per_channel:
        ax2 = axes[1][0]
        for i, n in enumerate(names):
            h = entropies[n].channel_entropy.float().numpy()
            ax2.scatter([i] * len(h), h, s=4, alpha=0.4, color="#2a6fb0")
        ax2.set_ylabel("channel entropy H_c (bits)")
        ax2.set_ylim(-0.02, 1.05)
        ax2.set_xticks(range(len(names)))
        ax2.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    fig.tight_layout()
    suffix = os.fspath(path).rsplit(".", 1)[-1] if "." in os.fspath(path) else "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=suffix)
    plt.close(fig)
