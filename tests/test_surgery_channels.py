"""Channel / unit removal: physically smaller, equal to the original with those channels zeroed."""

from __future__ import annotations

import importlib

import copy
import random

import pytest
import torch
from torch import nn

from netrazor.errors import SurgeryError
from netrazor.surgery import prunable_groups, remove_channels
from netrazor.surgery.channels import build_graph
from test_surgery_support import TEST_MODELS, make, n_params, zero_consumer_inputs


def _random_plan(groups, seed, fraction=0.4):
    rng = random.Random(seed)
    plan = {}
    for g in groups:
        k = max(1, int(g.size * fraction))
        plan[g.root] = sorted(rng.sample(range(g.size), k))
    return plan


def _consumer_plan(groups, plan):
    """Consumer input channels that removal must zero (computed from the groups' own mapping)."""
    out = {}
    for g in groups:
        for name in g.consumers:
            idxs = [i for r in plan.get(g.root, []) for i in g.consumer_idxs[name][r]]
            if idxs:
                out.setdefault(name, []).extend(idxs)
    return out


@pytest.mark.parametrize("name", sorted(TEST_MODELS))
@pytest.mark.parametrize("seed", [0, 1])
def test_remove_random_channel_sets_matches_zeroed_original(name, seed):
    model, x = make(name, seed)
    before = copy.deepcopy(model.state_dict())
    groups = prunable_groups(model, x)
    assert groups, "every test model has prunable channels"
    plan = _random_plan(groups, seed)
    small = remove_channels(model, plan, x)
    # the given model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert n_params(small) < n_params(model)
    for g in groups:
        kept = g.size - len(plan[g.root])
        root = small.get_submodule(g.root)
        width = root.out_channels if isinstance(root, nn.Conv2d) else root.out_features
        assert width == kept, f"{g.root} should keep {kept} channels"
    reference = zero_consumer_inputs(model, _consumer_plan(groups, plan))
    with torch.no_grad():
        for batch in (x, torch.randn_like(x)):
            torch.testing.assert_close(small(batch), reference(batch), rtol=1e-5, atol=1e-5)
            assert not torch.allclose(small(batch), model(batch), atol=1e-4), "removal must change something"


def test_output_units_are_not_offered():
    model, x = make("mlp")
    roots = {g.root for g in prunable_groups(model, x)}
    assert "4" not in roots  # the classifier's units are the output
    with pytest.raises(SurgeryError, match="produces the model's output"):
        remove_channels(model, {"4": [0]}, x)


def test_residual_partners_merge_in_root_space():
    model, x = make("resnet")
    groups = {g.root: g for g in prunable_groups(model, x)}
    g = groups["stem.0"]
    assert {"layer1.conv2", "layer1.bn2"} <= set(g.producers)  # the residual add couples them
    small = remove_channels(model, {"stem.0": [0], "layer1.conv2": [3]}, x)
    assert small.stem[0].out_channels == 6
    assert small.layer1.conv2.out_channels == 6
    assert small.layer2.shortcut[0].in_channels == 6


def test_concat_and_depthwise_coupling():
    model, x = make("densenet")
    small = remove_channels(model, {"block.l1.2": [1, 4]}, x)
    assert small.block.l1[2].out_channels == 4
    assert small.block.l2[0].num_features == 12  # BN over the concat lost the two channels
    assert small.trans[2].in_channels == 18
    model, x = make("dwsep")
    small = remove_channels(model, {"0": [0, 5, 9]}, x)
    dw = small[3]
    assert dw.in_channels == dw.out_channels == dw.groups == 13
    assert small[6].in_channels == 13


@pytest.mark.parametrize(
    "plan, match",
    [({"nope": [0]}, "no removable"), ({"0": [99]}, "out of range"), ({"0": list(range(32))}, "keep at least one"),
     ({"2": [0]}, None)],
)
def test_bad_requests_raise_clear_errors(plan, match):
    model, x = make("mlp")
    if match is None:  # '2' consumes group '0' but produces its own group: fine
        assert remove_channels(model, plan, x)[2].out_features == 23
        return
    with pytest.raises(SurgeryError, match=match):
        remove_channels(model, plan, x)


def test_consumer_only_name_is_rejected_with_hint():
    model, x = make("cnn")
    with pytest.raises(SurgeryError, match="produces the model's output"):
        remove_channels(model, {"10": [0]}, x)


def test_graph_traces_in_eval_and_restores_training_mode():
    model, x = make("cnn")
    model.train()
    build_graph(model, x)
    assert model.training


def test_coupling_through_a_channel_padding_shortcut_is_not_offered():
    models = importlib.import_module("netrazor.models")
    model = models.build_model("resnet20", shortcut="pad").eval()  # option A: zero-padded channels
    x = torch.randn(2, 3, 32, 32)
    groups = prunable_groups(model, x)
    roots = {g.root for g in groups}
    assert "stem.conv" not in roots  # its group would cross the channel padding
    assert all(r.endswith("branch.conv1") for r in roots)
    small = remove_channels(model, {g.root: [0, 1] for g in groups}, x)
    assert small.layer2[0].branch.conv1.out_channels == 30
    with pytest.raises(SurgeryError):
        remove_channels(model, {"stem.conv": [0]}, x)
