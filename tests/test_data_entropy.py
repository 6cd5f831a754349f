"""Per-image intensity entropy statistics (EBCLE's a-priori input)."""

from __future__ import annotations

import math

import pytest
import torch

from netrazor.data import ImageSet
from netrazor.data.entropy import dataset_entropy, histograms, to_luma
from netrazor.data.fetch import is_fetched
from netrazor.errors import ConfigError


def naive_entropy(image: torch.Tensor) -> float:
    """Reference: per channel, count values one by one, then average over channels."""
    out = []
    for ch in image:
        counts = {}
        for v in ch.flatten().tolist():
            counts[v] = counts.get(v, 0) + 1
        n = ch.numel()
        out.append(-sum(c / n * math.log2(c / n) for c in counts.values()))
    return sum(out) / len(out)


def as_set(images: torch.Tensor) -> ImageSet:
    return ImageSet(images, torch.zeros(len(images), dtype=torch.long))


def test_constant_image_has_zero_bits_and_uniform_has_eight():
    constant = torch.full((1, 1, 16, 16), 77, dtype=torch.uint8)
    uniform = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    half = torch.cat([torch.zeros(128), torch.full((128,), 255)]).to(torch.uint8).view(1, 1, 16, 16)
    s = dataset_entropy(as_set(torch.cat([constant, uniform, half])), per_image=True)
    assert s["per_image"].tolist() == pytest.approx([0.0, 8.0, 1.0])
    assert s["mean"] == pytest.approx(3.0) and s["min"] == 0.0 and s["max"] == pytest.approx(8.0)
    # Pooled histogram: 256 + 128 zeros and 128 + 256 of value 255... computed independently.
    pooled = torch.zeros(256)
    pooled += torch.bincount(torch.cat([constant, uniform, half]).flatten().long(), minlength=256)
    p = pooled[pooled > 0] / pooled.sum()
    assert s["pooled"] == pytest.approx(float(-(p * p.log2()).sum()))


def test_matches_naive_reference_on_random_rgb_images():
    torch.manual_seed(0)
    images = (torch.rand(9, 3, 7, 5) ** 3 * 255).to(torch.uint8)
    s = dataset_entropy(images, per_image=True)
    ref = torch.tensor([naive_entropy(im) for im in images], dtype=torch.float64)
    assert torch.allclose(s["per_image"], ref, atol=1e-9)
    assert s["std"] == pytest.approx(float(ref.std()))
    assert s["percentiles"]["p50"] == pytest.approx(float(ref.median()))
    assert list(s["percentiles"]) == ["p5", "p25", "p50", "p75", "p95"]
    assert len(s["pooled_per_channel"]) == 3


def test_histograms_and_chunking_are_consistent():
    images = torch.randint(0, 256, (10, 2, 4, 4), dtype=torch.uint8)
    h = histograms(images)
    assert h.shape == (10, 2, 256) and torch.equal(h.sum(-1), torch.full((10, 2), 16))
    assert h[3, 1, int(images[3, 1, 0, 0])] >= 1
    from netrazor.data.entropy import per_image_entropy

    a, pa = per_image_entropy(images, chunk=3)
    b, pb = per_image_entropy(images, chunk=100)
    assert torch.allclose(a, b) and torch.equal(pa, pb)


def test_luma_mode():
    grey = torch.randint(0, 256, (4, 1, 6, 6), dtype=torch.uint8)
    rgb = grey.expand(4, 3, 6, 6).contiguous()
    assert torch.equal(to_luma(rgb), grey)  # weights sum to 1: grey stays grey
    assert dataset_entropy(rgb, "luma")["mean"] == pytest.approx(dataset_entropy(grey)["mean"])
    red = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    red[:, 0] = 255
    assert to_luma(red).unique().tolist() == [76]  # round(0.299 * 255)
    with pytest.raises(ConfigError, match="mode"):
        dataset_entropy(grey, "hsv")


def test_real_mnist_entropy_if_present():
    if not is_fetched("mnist"):
        pytest.skip("MNIST not fetched here; run `netrazor data fetch mnist`")
    from netrazor.data import load_data

    bundle = load_data("mnist", fetch=False)
    s = dataset_entropy(bundle.train)
    assert dataset_entropy(bundle)["mean"] == s["mean"]  # a bundle means its train split
    # METHODS.md: MNIST is roughly 1.6 bits per image (mostly black background, few grey levels).
    assert 1.3 < s["mean"] < 1.9 and s["pooled"] > s["mean"]
