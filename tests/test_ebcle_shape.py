"""shape(): broader-shallower variants keep params / MACs within a few per cent and cut depth."""

from __future__ import annotations

import pytest

from netrazor.errors import ConfigError
from netrazor.measure import count_macs, count_params
from netrazor.methods.ebcle import conv_depth, shape
from netrazor.models import build_model, model_from_spec


@pytest.mark.parametrize("bound", [19, 13])
def test_resnet56_to_bound_keeps_params_within_5_percent(bound):
    original = build_model("resnet56")
    model, info = shape("resnet56", bound)
    assert conv_depth(original) == 55
    assert conv_depth(model) <= bound < 55 and info["layers"] == conv_depth(model) and info["within_bound"]
    assert abs(count_params(model) - count_params(original)) / count_params(original) < 0.05
    assert info["params"] == count_params(model) and abs(info["rel_error"]) < 0.05
    assert info["width_mult"] > 1.0  # broader
    # the result is a zoo model: its spec rebuilds the same architecture
    assert count_params(model_from_spec(model.netrazor_spec)) == count_params(model)


def test_keep_flops_matches_macs_and_keep_width_only_cuts():
    original = build_model("resnet32", in_channels=1, input_size=28)
    macs0 = count_macs(original, (1, 28, 28))
    model, info = shape("resnet32", 13, keep="flops", in_channels=1, input_size=28)
    assert conv_depth(model) <= 13
    assert abs(count_macs(model, (1, 28, 28)) - macs0) / macs0 < 0.05
    cut, info = shape("resnet32", 13, keep="width", in_channels=1, input_size=28)
    assert conv_depth(cut) <= 13 and info["width_mult"] == 1.0 and count_params(cut) < count_params(original)


def test_vgg_and_fixed_depth_families():
    model, info = shape("vgg16", 8, in_channels=1, input_size=28, width_mult=0.25)
    assert conv_depth(model) <= 8 < 13 == info["layers_original"]
    assert abs(info["rel_error"]) < 0.05
    # already within the bound: unchanged
    same, info = shape("resnet20", 40)
    assert conv_depth(same) == 19 and info["width_mult_rel"] == 1.0
    # LeNet-5's depth is part of its identity: unchanged, flagged as not within the bound
    lenet, info = shape("lenet5", 1)
    assert conv_depth(lenet) == 2 and not info["within_bound"]


def test_shallowest_possible_when_bound_is_below_the_family_minimum():
    model, info = shape("resnet20", 3)
    assert conv_depth(model) == 7 and not info["within_bound"]  # one block per stage


def test_explicit_block_lists_are_scaled():
    model, info = shape("resnet20", 7, blocks=[3, 3, 3], widths=[16, 32, 64])
    assert model.netrazor_spec["kwargs"]["blocks"] == [1, 1, 1]
    assert model.netrazor_spec["kwargs"]["widths"][0] > 16
    assert abs(info["rel_error"]) < 0.05


def test_bad_arguments():
    with pytest.raises(ConfigError):
        shape("resnet20", 5, keep="bytes")
    with pytest.raises(ConfigError):
        shape("resnet20", 0)


def test_resnet56_shaped_to_the_default_rules_bound_for_high_entropy_data():
    import torch

    from netrazor.data.entropy import dataset_entropy
    from netrazor.methods.ebcle import get_rule

    noise = torch.randint(0, 256, (32, 3, 32, 32), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    bound = get_rule().max_depth(dataset_entropy(noise), (32, 32))
    original = build_model("resnet56")
    model, info = shape("resnet56", bound)
    assert conv_depth(model) <= bound
    if bound < 55:
        assert conv_depth(model) < 55
    assert abs(count_params(model) - count_params(original)) / count_params(original) < 0.05


def test_round_to_gives_channel_multiples_and_keeps_params_on_the_coarser_grid():
    kw = dict(in_channels=1, input_size=28)
    original = build_model("resnet32", **kw)
    model, info = shape("resnet32", 22, round_to=8, **kw)
    widths = model.netrazor_spec["kwargs"]["widths"]
    assert info["round_to"] == 8 and widths == info["widths"] and all(c % 8 == 0 for c in widths)
    assert conv_depth(model) <= 22 and widths[0] > 16  # shallower and broader
    assert abs(count_params(model) - count_params(original)) / count_params(original) < 0.10
    assert count_params(model_from_spec(model.netrazor_spec)) == count_params(model)
    # without rounding the solved widths are not multiples of 8 (the reason for the knob)
    plain, _ = shape("resnet32", 22, **kw)
    assert plain.stem.conv.out_channels % 8 != 0


def test_budget_scales_the_kept_quantity():
    kw = dict(in_channels=1, input_size=28)
    macs0 = count_macs(build_model("resnet32", **kw), (1, 28, 28))
    model, info = shape("resnet32", 9, keep="flops", budget=0.5, **kw)
    assert abs(count_macs(model, (1, 28, 28)) - 0.5 * macs0) / (0.5 * macs0) < 0.05 and abs(info["rel_error"]) < 0.05
    cut, _ = shape("resnet32", 9, keep="width", **kw)
    assert model.stem.conv.out_channels > cut.stem.conv.out_channels  # broader than the plain cut


def test_round_to_and_budget_reject_bad_values():
    for bad in (dict(round_to=0), dict(round_to=2.5), dict(budget=0), dict(keep="width", budget=0.5)):
        with pytest.raises(ConfigError):
            shape("resnet20", 7, **bad)
    with pytest.raises(ConfigError):
        shape("vgg11", 4, round_to=8)  # no explicit stage widths in the VGG builder
