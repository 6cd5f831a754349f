"""The EGP budget: irrelevance, softmax shares, capping and re-sharing, integer rounding; masks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from netrazor.errors import ConfigError
from netrazor.methods.entropy_depth.budget import allocate, irrelevance, share_budget, softmax
from netrazor.methods.entropy_depth.masks import WeightMasks
from netrazor.methods.masks import MaskKeeper


def test_irrelevance_formula_and_zero_entropy_guard():
    I = irrelevance({"a": 0.5, "b": 1.0}, {"a": 2.0, "b": 1.0})
    # sum H m = 1 + 1 = 2 ; I_a = 2 / 1, I_b = 2 / 1
    assert I == {"a": 2.0, "b": 2.0}
    I = irrelevance({"a": 0.0, "b": 1.0}, {"a": 1.0, "b": 1.0}, eps=1e-6)
    assert math.isfinite(I["a"]) and I["a"] == pytest.approx(1e6)
    assert I["a"] > I["b"]  # a zero-entropy layer is the most irrelevant, never a NaN


def test_lower_entropy_layer_gets_more_budget():
    b = allocate({"low": 0.2, "high": 0.9}, {"low": 0.1, "high": 0.1}, {"low": 1000, "high": 1000}, zeta=0.5)
    assert sum(b.values()) == 1000
    assert b["low"] > b["high"]
    shares = softmax(irrelevance({"low": 0.2, "high": 0.9}, {"low": 0.1, "high": 0.1}))
    assert b["low"] == pytest.approx(1000 * shares["low"], abs=1)


def test_capped_layer_is_emptied_and_excess_reshared():
    # "tiny" gets nearly all the softmax share but has only 10 weights: it is emptied and the
    # rest of B goes to the others in proportion to their shares.
    b = allocate({"tiny": 0.01, "x": 0.9, "y": 0.95}, {"tiny": 1.0, "x": 1.0, "y": 1.0}, {"tiny": 10, "x": 500, "y": 500}, zeta=0.5)
    assert b["tiny"] == 10
    assert sum(b.values()) == round(0.5 * 1010)
    assert b["x"] >= b["y"]


def test_zeta_is_checked():
    with pytest.raises(ConfigError):
        allocate({"a": 1.0}, {"a": 1.0}, {"a": 10}, zeta=1.5)


layer_names = st.lists(st.text("abcdef", min_size=1, max_size=4), min_size=1, max_size=8, unique=True)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), names=layer_names, zeta=st.floats(0.0, 1.0))
def test_budget_sums_to_B_and_never_exceeds_alive(data, names, zeta):
    entropy = {n: data.draw(st.floats(0.0, 1.0)) for n in names}
    magnitude = {n: data.draw(st.floats(0.0, 10.0)) for n in names}
    alive = {n: data.draw(st.integers(0, 5000)) for n in names}
    b = allocate(entropy, magnitude, alive, zeta=zeta)
    assert set(b) == set(names)
    assert sum(b.values()) == round(zeta * sum(alive.values()))
    for n in names:
        assert 0 <= b[n] <= alive[n]


@settings(max_examples=200, deadline=None)
@given(data=st.data(), names=layer_names)
def test_share_budget_caps_and_conserves(data, names):
    raw = {n: data.draw(st.floats(0.0, 1.0)) for n in names}
    total = sum(raw.values()) or 1.0
    shares = {n: v / total for n, v in raw.items()}
    alive = {n: data.draw(st.integers(0, 300)) for n in names}
    budget = data.draw(st.floats(0.0, float(sum(alive.values()))))
    out = share_budget(budget, shares, alive)
    assert sum(out.values()) == pytest.approx(budget, abs=1e-6)
    for n in names:
        assert out[n] <= alive[n] + 1e-9


def test_magnitude_prune_exact_count_and_masks_survive_updates():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4))
    masks = WeightMasks(model, ["0", "2"])
    small = model[0].weight.detach().abs().flatten().sort().values[:7]
    pruned = masks.prune(model, ["0"], 7)
    assert pruned == 7
    assert masks.alive(["0"]) == 30 - 7
    assert int((model[0].weight == 0).sum()) == 7
    # the survivors are exactly the largest magnitudes
    w = model[0].weight.detach()
    assert float(w.abs()[w != 0].min()) >= float(small.max())
    # a training step moves zeroed weights; the callback puts them back
    with torch.no_grad():
        model[0].weight.add_(1.0)

    class T:
        pass

    t = T()
    t.model = model
    keeper = MaskKeeper(model, masks.masks)
    keeper.on_step_end(t, 0, 0.0)
    assert int((model[0].weight == 0).sum()) == 7
    # and pruned weights get no gradient (no momentum builds up for them)
    model[0].weight.grad = torch.ones_like(model[0].weight)
    keeper.on_after_backward(t)
    assert torch.equal(model[0].weight.grad != 0, masks.masks["0"])
    assert masks.mean_abs(model, ["0"]) == pytest.approx(float(model[0].weight.detach().abs().sum() / 23))


def test_temperature_spreads_the_budget_and_one_is_the_egp_rule():
    H = {"a": 0.3, "b": 0.6, "c": 0.9}
    m = {"a": 0.05, "b": 0.1, "c": 0.1}
    alive = {"a": 10_000, "b": 10_000, "c": 10_000}
    sharp = allocate(H, m, alive, zeta=0.3)
    assert sharp == allocate(H, m, alive, zeta=0.3, temperature=1.0)
    soft = allocate(H, m, alive, zeta=0.3, temperature=50.0)
    assert max(soft.values()) < max(sharp.values())
    assert sum(soft.values()) == sum(sharp.values()) == 9000
    with pytest.raises(ConfigError):
        allocate(H, m, alive, temperature=0.0)


def test_capped_layers_leave_the_irrelevance_sum_as_in_the_egp_code():
    # "tiny" is capped; the rest of B is shared by softmax of I recomputed over x and y only
    # (sum H m over x, y), not by their first-pass shares.
    H, m, alive = {"tiny": 0.3, "x": 0.35, "y": 0.9}, {"tiny": 1.0, "x": 1.0, "y": 1.0}, {"tiny": 10, "x": 5000, "y": 5000}
    b = allocate(H, m, alive, zeta=0.5)
    assert b["tiny"] == 10
    again = softmax(irrelevance({"x": 0.35, "y": 0.9}, {"x": 1.0, "y": 1.0}))
    assert b["x"] == pytest.approx((5005 - 10) * again["x"], abs=1)
    first = softmax(irrelevance(H, m))
    proportional = (5005 - 10) * first["x"] / (first["x"] + first["y"])
    assert abs(b["x"] - proportional) > 50  # the two re-sharing rules differ here


def test_a_flat_softmax_empties_small_layers_and_layer_cap_keeps_them():
    # Why a temperature does not rescue a plain net: at a high T every layer is offered the same
    # absolute count, which exceeds what a small early layer holds.
    H = {"conv1": 0.9, "conv2": 0.95, "conv3": 0.5}
    m = {"conv1": 0.2, "conv2": 0.02, "conv3": 0.01}
    alive = {"conv1": 144, "conv2": 100_000, "conv3": 100_000}
    flat = allocate(H, m, alive, zeta=0.5, temperature=1e6)
    assert flat["conv1"] == 144
    sharp = allocate(H, m, alive, zeta=0.5)  # EGP: the big low-|w| layers take it all
    assert sharp["conv3"] == 100_000 and sharp["conv1"] == 0
    capped = allocate(H, m, alive, zeta=0.5, layer_cap=0.9)
    assert all(capped[n] <= int(0.9 * alive[n]) for n in H)
    assert sum(capped.values()) == round(0.5 * sum(alive.values()))
    capped_flat = allocate(H, m, alive, zeta=0.5, temperature=1e6, layer_cap=0.9)
    assert capped_flat["conv1"] == int(0.9 * 144)
    with pytest.raises(ConfigError):
        allocate(H, m, alive, layer_cap=0.0)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), names=layer_names, zeta=st.floats(0.0, 1.0), cap=st.floats(0.05, 1.0))
def test_budget_respects_layer_cap(data, names, zeta, cap):
    entropy = {n: data.draw(st.floats(0.0, 1.0)) for n in names}
    magnitude = {n: data.draw(st.floats(0.0, 10.0)) for n in names}
    alive = {n: data.draw(st.integers(0, 5000)) for n in names}
    b = allocate(entropy, magnitude, alive, zeta=zeta, layer_cap=cap)
    caps = {n: int(math.floor(cap * alive[n] + 1e-9)) for n in names}
    assert sum(b.values()) == min(round(zeta * sum(alive.values())), sum(caps.values()))
    for n in names:
        assert 0 <= b[n] <= caps[n]
