"""Quantiser properties: zeros stay zero, at most 2^b levels, error falls with bits, exact indices."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from netrazor.errors import ConfigError
from netrazor.quant import quantize_kmeans, quantize_tensor, quantize_uniform
from netrazor.quant.quantizers import uniform_levels


@st.composite
def sparse_tensors(draw):
    rows = draw(st.integers(1, 12))
    cols = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    density = draw(st.floats(0.05, 1.0))
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * draw(st.floats(1e-3, 10.0))
    w = w * (torch.rand(rows, cols, generator=g) < density)
    return w


METHODS = [("kmeans", False), ("uniform", False), ("uniform", True)]


@settings(max_examples=40, deadline=None)
@given(w=sparse_tensors(), bits=st.integers(1, 8), which=st.sampled_from(METHODS))
def test_zeros_stay_zero_survivors_stay_nonzero_and_levels_bounded(w, bits, which):
    method, per_channel = which
    q = quantize_tensor(w, bits, method, per_channel)
    assert torch.equal(q.dequantized == 0, w == 0)  # pruned stay exactly 0; no survivor collapses to 0
    assert torch.equal(q.indices >= 0, w != 0)
    rows = q.dequantized.reshape(w.shape[0], -1) if per_channel else q.dequantized.reshape(1, -1)
    for row in rows:
        assert torch.unique(row[row != 0]).numel() <= 2**bits
    assert int(q.indices.max()) < 2**bits
    # the dequantised tensor is exactly the codebook looked up by the indices
    mask = w != 0
    book = q.codebook if q.codebook.dim() == 1 else None
    if book is not None:
        assert torch.equal(q.dequantized[mask], book[q.indices[mask]])
    assert not bool((q.codebook == 0).any())


@settings(max_examples=30, deadline=None)
@given(w=sparse_tensors(), per_channel=st.booleans())
def test_uniform_error_never_grows_with_bits(w, per_channel):
    errors = [float(((quantize_uniform(w, b, per_channel).dequantized - w) ** 2).sum()) for b in range(1, 9)]
    for lo, hi in zip(errors[1:], errors[:-1]):
        assert lo <= hi * (1 + 1e-5) + 1e-12


@settings(max_examples=30, deadline=None)
@given(w=sparse_tensors())
def test_kmeans_error_falls_with_bits(w):
    errors = {b: float(((quantize_kmeans(w, b).dequantized - w) ** 2).sum()) for b in (1, 2, 4, 8)}
    scale = float((w**2).sum()) + 1e-12
    # Lloyd is a local method, so allow a hair of slack between neighbours; 8 bits beats 1 bit clearly
    assert errors[8] <= errors[4] + 1e-6 * scale
    assert errors[4] <= errors[2] + 1e-6 * scale
    assert errors[2] <= errors[1] + 1e-6 * scale


def test_one_bit_uniform_is_sign_times_mean_abs():
    w = torch.tensor([[0.0, 1.0, -3.0], [2.0, 0.0, -2.0]])
    q = quantize_uniform(w, 1)
    s = w[w != 0].abs().mean()
    assert torch.allclose(q.dequantized, torch.sign(w) * s)
    assert torch.allclose(q.scale, s)


def test_uniform_levels_are_odd_multiples_without_zero():
    levels = uniform_levels(torch.tensor(0.5), 3)
    assert torch.allclose(levels, torch.tensor([-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5]))


def test_kmeans_is_exact_when_few_distinct_values_and_deterministic():
    w = torch.tensor([[0.0, 0.25, -0.5], [0.25, 0.0, 0.75]])
    q = quantize_kmeans(w, 2)
    assert torch.equal(q.dequantized, w)
    big = torch.randn(64, 64)
    a, b = quantize_kmeans(big, 3), quantize_kmeans(big, 3)
    assert torch.equal(a.codebook, b.codebook) and torch.equal(a.indices, b.indices)


def test_kmeans_init_options_and_errors():
    w = torch.randn(32, 32)
    for init in ("linear", "quantile", torch.linspace(-1, 1, 4)):
        q = quantize_kmeans(w, 2, init=init)
        assert q.codebook.numel() == 4
    with pytest.raises(ConfigError):
        quantize_kmeans(w, 2, init="random")
    with pytest.raises(ConfigError):
        quantize_kmeans(w, 9)
    with pytest.raises(ConfigError):
        quantize_uniform(w, 0)
    with pytest.raises(ConfigError):
        quantize_tensor(w, 4, "kmeans", per_channel=True)
    with pytest.raises(ConfigError):
        quantize_uniform(torch.tensor([[float("nan"), 1.0]]), 4)


def test_all_zero_tensor_stays_zero():
    w = torch.zeros(4, 5)
    for method in ("kmeans", "uniform"):
        q = quantize_tensor(w, 3, method)
        assert torch.equal(q.dequantized, w)
        assert bool((q.indices == -1).all())


def test_kmeans_beats_uniform_on_pruned_bimodal_weights():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(200, 100, generator=g)
    w[w.abs() < 1.0] = 0  # magnitude pruning leaves two lobes
    ek = float(((quantize_kmeans(w, 2).dequantized - w) ** 2).sum())
    eu = float(((quantize_uniform(w, 2).dequantized - w) ** 2).sum())
    assert ek < eu


@settings(max_examples=30, deadline=None)
@given(w=sparse_tensors(), bits=st.integers(1, 8), which=st.sampled_from(METHODS))
def test_requantising_a_quantised_tensor_changes_nothing(w, bits, which):
    method, per_channel = which
    once = quantize_tensor(w, bits, method, per_channel).dequantized
    twice = quantize_tensor(once, bits, method, per_channel).dequantized
    if method == "uniform":
        # exact whenever the smallest level ±scale is in use (then it is a candidate scale)
        rows = once.reshape(w.shape[0], -1) if per_channel else once.reshape(1, -1)
        q = quantize_tensor(w, bits, method, per_channel)
        scales = q.scale.reshape(-1, 1)
        uses_smallest = ((rows.abs() - scales).abs() <= 1e-6 * scales).any(1) | ~(rows != 0).any(1)
        if not bool(uses_smallest.all()):
            return
    assert torch.equal(twice, once)


def test_kmeans_levels_are_float16_values_unless_asked_for_float32():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2000, generator=g) * 0.05
    q16 = quantize_kmeans(w, 4)
    q32 = quantize_kmeans(w, 4, level_dtype="float32")
    assert torch.equal(q16.codebook.half().float(), q16.codebook)  # exactly representable
    assert not torch.equal(q32.codebook.half().float(), q32.codebook)
    assert (q16.codebook != 0).all() and q16.codebook.numel() <= 16
    # rounding moves a level by at most 2^-11 of its value
    assert torch.allclose(q16.codebook, q32.codebook, rtol=2**-10, atol=0)
    tiny = torch.tensor([1e-9, -1e-9, 0.5, 0.25, 0.125] * 10)  # underflow must not create a zero level
    assert (quantize_kmeans(tiny, 2).codebook != 0).all()
    with pytest.raises(ConfigError):
        quantize_kmeans(w, 4, level_dtype="bfloat16")
