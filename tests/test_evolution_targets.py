"""Splitting one global density over layers: exact totals, floors, uniform rule, dict targets."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from netrazor.errors import ConfigError
from netrazor.methods.masks import prunable_layers
from netrazor.methods.evolution.targets import density_targets, keep_counts


def _mlp(sizes, seed):
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=2, max_size=5), density=st.floats(0.0, 1.0), seed=st.integers(0, 99))
def test_magnitude_split_total_is_exact_without_floor(sizes, density, seed):
    layers = prunable_layers(_mlp(sizes, seed))
    counts = keep_counts(layers, density, "magnitude", min_density=0.0)
    total = sum(m.weight.numel() for m in layers.values())
    assert sum(counts.values()) == round(density * total)
    assert all(0 <= counts[n] <= m.weight.numel() for n, m in layers.items())


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(2, 40), min_size=3, max_size=5), density=st.floats(0.02, 0.5), seed=st.integers(0, 99))
def test_magnitude_split_respects_floor_and_budget(sizes, density, seed):
    layers = prunable_layers(_mlp(sizes, seed))
    floor = 0.05
    counts = keep_counts(layers, density, "magnitude", min_density=floor)
    total = sum(m.weight.numel() for m in layers.values())
    floors = {n: min(m.weight.numel(), max(1, round(floor * m.weight.numel()))) for n, m in layers.items()}
    assert all(counts[n] >= floors[n] for n in layers)
    if sum(floors.values()) <= round(density * total):
        assert sum(counts.values()) == round(density * total)


def test_uniform_and_dict_targets():
    layers = prunable_layers(_mlp([10, 20, 5], 0))
    assert density_targets(layers, 0.5, "uniform") == {"0": 0.5, "1": 0.5}
    assert keep_counts(layers, {"1": 0.2}) == {"0": 200, "1": 20}  # unnamed layers stay dense
    with pytest.raises(ConfigError, match="unknown layers"):
        keep_counts(layers, {"nope": 0.2})
    with pytest.raises(ConfigError, match="outside"):
        keep_counts(layers, 1.5)
