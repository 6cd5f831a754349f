"""EBCLE depth rules: monotonicity, data-driven ordering, registry."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from netrazor.data.entropy import dataset_entropy
from netrazor.errors import ConfigError
from netrazor.methods.ebcle import EntropyHalvingsRule, FixedDepthRule, RULES, get_rule, register_rule
from netrazor.methods.ebcle.rules import DEFAULT_RULE, DepthRule, entropy_ratio


def stats(mean: float) -> dict:
    return {"mean": mean, "pooled": mean, "percentiles": {"p50": mean, "p95": mean}, "max_bits": 8.0}


@settings(max_examples=60, deadline=None)
@given(st.floats(0.0, 8.0), st.floats(0.0, 8.0), st.integers(2, 512), st.integers(2, 512))
def test_default_rule_monotone_in_entropy_and_side(h1, h2, s1, s2):
    rule = get_rule()
    lo_h, hi_h = sorted((h1, h2))
    lo_s, hi_s = sorted((s1, s2))
    assert rule.max_depth(stats(lo_h), (lo_s, lo_s)) <= rule.max_depth(stats(hi_h), (lo_s, lo_s))
    assert rule.max_depth(stats(lo_h), (lo_s, lo_s)) <= rule.max_depth(stats(lo_h), (hi_s, hi_s))
    assert rule.max_depth(stats(lo_h), (lo_s, lo_s)) >= 1


def test_rule_strictly_grows_over_the_range_and_uses_smaller_side():
    rule = EntropyHalvingsRule()
    depths = [rule.max_depth(stats(h), (32, 32)) for h in (1.0, 3.0, 5.0, 8.0)]
    assert depths == sorted(depths) and depths[0] < depths[-1]
    assert rule.max_depth(stats(6.0), (32, 256)) == rule.max_depth(stats(6.0), (32, 32))
    assert rule.max_depth(stats(6.0), (256, 256)) > rule.max_depth(stats(6.0), (32, 32))
    assert rule.raw(stats(8.0), (32, 32)) == pytest.approx(rule.k * 1.0 * 5.0)


def _mnist_like(n=64, side=28, seed=0):
    # Mostly black background with a few bright strokes: a low-entropy histogram like MNIST.
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(n, 1, side, side, dtype=torch.uint8)
    mask = torch.rand(n, 1, side, side, generator=g) < 0.15
    img[mask] = 255
    edge = torch.rand(n, 1, side, side, generator=g) < 0.03
    img[edge] = torch.randint(1, 255, (int(edge.sum()),), generator=g, dtype=torch.int64).to(torch.uint8)
    return img


def _cifar_like(n=64, side=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.int64).to(torch.uint8)


def test_low_entropy_data_gets_a_smaller_bound_than_high_entropy_data():
    low, high = dataset_entropy(_mnist_like()), dataset_entropy(_cifar_like())
    assert low["mean"] < 2.5 < 7.0 < high["mean"]
    rule = get_rule()
    assert rule.max_depth(low, (28, 28)) < rule.max_depth(high, (32, 32))


def test_statistic_knob_and_errors():
    s = {"mean": 2.0, "pooled": 4.0, "percentiles": {"p50": 3.0, "p95": 6.0}, "max_bits": 8.0}
    assert entropy_ratio(s) == 0.25
    assert entropy_ratio(s, "pooled") == 0.5
    assert entropy_ratio(s, "median") == 0.375
    assert entropy_ratio(s, "p95") == 0.75
    with pytest.raises(ConfigError, match="p42"):
        entropy_ratio(s, "p42")
    assert EntropyHalvingsRule(statistic="p95").max_depth(s, (32, 32)) > EntropyHalvingsRule().max_depth(s, (32, 32))
    with pytest.raises(ConfigError):
        EntropyHalvingsRule(k=-1)
    with pytest.raises(ConfigError):
        EntropyHalvingsRule(min_depth=0)
    assert EntropyHalvingsRule(min_depth=9).max_depth(stats(0.0), (32, 32)) == 9


def test_registry_is_swappable():
    assert DEFAULT_RULE in RULES and isinstance(get_rule(), DepthRule)
    assert get_rule("fixed", depth=5).max_depth(stats(8.0), (32, 32)) == 5
    with pytest.raises(ConfigError, match="unknown depth rule"):
        get_rule("nope")
    with pytest.raises(ConfigError, match="bad options"):
        get_rule("fixed", width=3)

    class Halves:
        def max_depth(self, stats, input_hw, **kw):
            return input_hw[0] // 2

    register_rule("test-halves", Halves)
    try:
        assert get_rule("test-halves").max_depth(stats(1.0), (20, 20)) == 10
        obj = FixedDepthRule(3)
        assert get_rule(obj) is obj
    finally:
        RULES.pop("test-halves")
