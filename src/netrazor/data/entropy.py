"""Shannon entropy of 8-bit image intensities: the a-priori statistic EBCLE bounds depth with.

EBCLE (Gowdra et al., 2021; METHODS.md §1) uses "the entropy of the input data set" without a
published formula; ours [REC]: for each image, the Shannon entropy in bits of its 256-bin
intensity histogram, ``H = -sum_v p_v log2 p_v`` with ``0 log 0 = 0`` — computed per channel and
averaged over channels (``mode="channel"``) or on the BT.601 luma ``Y = 0.299 R + 0.587 G +
0.114 B`` rounded to 8 bits (``mode="luma"``, Pillow's ``convert("L")`` weights). A constant
image has 0 bits; an image using all 256 values equally often has the maximum, 8 bits.
The set is summarised by the mean, std and percentiles of the per-image entropies and by the
entropy of the histogram pooled over the whole set (per channel, then averaged).

Vectorised: the histograms of a whole chunk of images come from one ``torch.bincount`` over
values offset by ``256 * row`` (one row per image-channel), so a pass over MNIST takes well
under a second.
"""

from __future__ import annotations

import torch

from netrazor.data.types import DataBundle, ImageSet
from netrazor.errors import ConfigError

PERCENTILES = (5, 25, 50, 75, 95)
MODES = ("channel", "luma")
# ITU-R BT.601 luma weights, the ones Pillow's convert("L") uses.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def histograms(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` (or ``[N, H, W]``) -> int64 ``[N, C, 256]`` intensity counts per image-channel."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    n, c = images.shape[:2]
    rows = images.reshape(n * c, -1).long()
    offsets = torch.arange(n * c).mul_(256).unsqueeze(1)
    counts = torch.bincount((rows + offsets).reshape(-1), minlength=n * c * 256)
    return counts.view(n, c, 256)


def entropy_bits(counts: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits along the last axis of a histogram tensor (0 log 0 = 0)."""
    counts = counts.double()
    p = counts / counts.sum(-1, keepdim=True).clamp_min(1)
    logp = torch.where(p > 0, torch.log2(p.clamp_min(1e-300)), torch.zeros_like(p))
    return -(p * logp).sum(-1)


def to_luma(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` -> uint8 ``[N, 1, H, W]`` BT.601 luma; one-channel images pass through."""
    if images.shape[1] == 1:
        return images
    if images.shape[1] != 3:
        raise ConfigError(f"luma needs 1 or 3 channels, got {images.shape[1]}; use mode='channel'.")
    w = torch.tensor(LUMA_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)


def per_image_entropy(images: torch.Tensor, mode: str = "channel", chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image entropy (bits, float64 ``[N]``) and the pooled histogram (int64 ``[C', 256]``).

    ``chunk`` bounds memory: each chunk is widened to int64 once for the offset bincount.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown entropy mode {mode!r}; choose one of {', '.join(MODES)}.")
    out, pooled = [], None
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        if mode == "luma":
            part = to_luma(part)
        hist = histograms(part)  # [n, C', 256]
        out.append(entropy_bits(hist).mean(1))  # per channel, then averaged over channels
        pooled = hist.sum(0) if pooled is None else pooled + hist.sum(0)
    if not out:
        raise ConfigError("cannot compute the entropy of an empty image set; pass a non-empty split.")
    return torch.cat(out), pooled


def dataset_entropy(imageset: ImageSet | torch.Tensor, mode: str = "channel", per_image: bool = False) -> dict:
    """Entropy statistics of an image set (see the module docstring for the definition).

    ``imageset``: an ImageSet, a uint8 ``[N, C, H, W]`` tensor, or a DataBundle (its ``train`` split).

    Returns ``{"mode", "n_images", "mean", "std", "min", "max", "percentiles": {"p5": ..., "p95": ...},
    "pooled", "pooled_per_channel", "max_bits": 8.0}`` in bits, plus ``"per_image"`` (float64
    ``[N]`` tensor) when ``per_image=True``.
    """
    if isinstance(imageset, DataBundle):
        imageset = imageset.train  # statistics of the training data only, never the test split
    images = imageset.images if isinstance(imageset, ImageSet) else imageset
    values, pooled = per_image_entropy(images, mode)
    pooled_channels = entropy_bits(pooled)
    qs = torch.quantile(values, torch.tensor([p / 100 for p in PERCENTILES], dtype=torch.float64))
    stats = {
        "mode": mode,
        "n_images": int(len(values)),
        "mean": float(values.mean()),
        "std": float(values.std()) if len(values) > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
        "percentiles": {f"p{p}": float(q) for p, q in zip(PERCENTILES, qs)},
        "pooled": float(pooled_channels.mean()),
        "pooled_per_channel": [float(v) for v in pooled_channels],
        "max_bits": 8.0,
    }
    if per_image:
        stats["per_image"] = values
    return stats
