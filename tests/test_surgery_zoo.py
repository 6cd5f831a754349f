"""Surgery on the zoo: remove random channel sets, fold linearised sections, save, load in a
fresh process and export to ONNX — outputs match at every step."""

from __future__ import annotations

import importlib

import copy
import random

import pytest
import torch

models = importlib.import_module("netrazor.models")

from netrazor.surgery import (activation_names, export_onnx, fold_linear_sections, prunable_groups,  # noqa: E402
                              remove_channels, replace_activation, save_model)
from test_surgery_serialize import _fresh_process_outputs  # noqa: E402
from test_surgery_support import n_params, randomize_bn, real_looking, zero_consumer_inputs  # noqa: E402

ZOO = ["resnet20", "vgg11", "mobilenetv2", "lenet5"]


def _zoo(name):
    model = randomize_bn(models.build_model(name), seed=1).eval()
    c, (h, w) = model.netrazor_spec["kwargs"]["in_channels"], model.netrazor_spec["kwargs"]["input_size"]
    return model, real_looking((c, h, w), batch=3, seed=2)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_surgery_round_trip(name, tmp_path):
    model, x = _zoo(name)
    groups = prunable_groups(model, x)
    rng = random.Random(0)
    plan = {g.root: sorted(rng.sample(range(g.size), max(1, g.size * 3 // 10))) for g in groups}
    pruned = remove_channels(model, plan, x)
    assert n_params(pruned) < 0.8 * n_params(model)
    consumers = {}
    for g in groups:
        for c in g.consumers:
            consumers.setdefault(c, []).extend(i for r in plan[g.root] for i in g.consumer_idxs[c][r])
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), zero_consumer_inputs(model, consumers)(x), rtol=1e-5, atol=1e-5)

    # linearise every second rectifier, then fold what became linear
    lin = copy.deepcopy(pruned)
    for a in activation_names(lin)[::2]:
        replace_activation(lin, a)
    folded, report = fold_linear_sections(lin, x, timing_repeats=3)
    assert report["layers_after"]["batchnorm"] == 0
    with torch.no_grad():
        torch.testing.assert_close(folded(x), lin(x), rtol=1e-5, atol=1e-5)

    assert save_model(pruned, tmp_path / "pruned")["kind"] == "zoo"
    assert save_model(lin, tmp_path / "lin")["kind"] == "zoo"  # ReLU -> Identity is a recorded change
    assert save_model(folded, tmp_path / "folded", example_input=x)["kind"] == "graph"
    got = _fresh_process_outputs(tmp_path, {"pruned": x, "lin": x, "folded": x})
    with torch.no_grad():
        for key, m in (("pruned", pruned), ("lin", lin), ("folded", folded)):
            torch.testing.assert_close(got[key], m(x), rtol=1e-6, atol=1e-6, msg=key)

    for key, m in (("pruned", pruned), ("folded", folded)):
        assert export_onnx(m, tmp_path / f"{key}.onnx", tuple(x.shape[1:]))["rel_diff"] <= 1e-4


def test_zoo_dead_channel_folded_then_saved_as_zoo_changes(tmp_path):
    from netrazor.surgery import fold_constant_channels, load_model

    model, x = _zoo("resnet20")
    with torch.no_grad():
        model.layer1[0].branch.bn1.bias[[2, 9]] = -1e4  # channels 2, 9 never fire after relu1
    small, report = fold_constant_channels(model, x)
    removed = report["removed"]["layer1.0.branch.conv1"]
    assert {2, 9} <= set(removed)  # others may be dead on these 3 examples too (random BN)
    header = save_model(small, tmp_path / "dead")
    assert header["kind"] == "zoo"
    assert header["changed"]["layer1.0.branch.conv1"]["args"]["out_channels"] == 16 - len(removed)
    loaded = load_model(tmp_path / "dead")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)
