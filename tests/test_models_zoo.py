"""The zoo builds every model for MNIST- and CIFAR-shaped inputs, scales with the multipliers,
keeps its layout conventions, and rebuilds from its JSON spec."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from netrazor.errors import ModelError
from netrazor.models import build_model, list_models, model_from_spec, model_spec
from netrazor.models.resnet import BasicBlock, PadShortcut

ALL = ["lenet300", "lenet5", "mobilenetv2", "resnet18", "resnet20", "resnet32", "resnet56", "vgg11", "vgg16"]
SHAPES = [(1, 28, 28), (3, 32, 32)]


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_list_models_names_the_contract_models():
    assert list_models() == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", SHAPES, ids=["1x28x28", "3x32x32"])
def test_every_model_builds_and_runs_forward(name, shape):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=shape[0], input_size=shape[1:]).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_every_rectifier_is_its_own_relu_module(name):
    model = build_model(name)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) >= 2
    assert len({id(m) for m in relus}) == len(relus)
    # Replacing a rectifier by name must change the function: proves it is called as a module
    # (a functional relu would ignore the swap).
    x = torch.randn(2, *(1, 28, 28) if name.startswith("lenet") else (3, 32, 32))
    model.eval()
    with torch.no_grad():
        before = model(x)
        for rname, module in list(model.named_modules()):
            if isinstance(module, nn.ReLU):
                parent_name, _, child = rname.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                setattr(parent, child, nn.Identity())
        after = model(x)
    assert not torch.allclose(before, after)


def test_lenet5_caffe_has_431080_parameters():
    assert params(build_model("lenet5")) == 431_080


def test_lenet300_shape_and_input_features_from_channels_and_size():
    model = build_model("lenet300")
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [300, 100, 10]
    assert model.fc1.in_features == 784
    assert build_model("lenet300", in_channels=3, input_size=32).fc1.in_features == 3 * 32 * 32
    # 784*300+300 + 300*100+100 + 100*10+10
    assert params(model) == 266_610


def test_resnet20_parameter_counts_match_the_paper_and_the_hand_count():
    # Option A (pad) is the paper's 0.27 M: stem 3*16*9 + BN, 3 stages of 3 blocks, fc.
    def bn(c):
        return 2 * c

    stem = 3 * 16 * 9 + bn(16)
    stage = lambda cin, c: (cin * c * 9 + bn(c) + c * c * 9 + bn(c)) + 2 * (2 * (c * c * 9 + bn(c)))
    pad = stem + stage(16, 16) + stage(16, 32) + stage(32, 64) + 64 * 10 + 10
    assert pad == 269_722
    assert params(build_model("resnet20", shortcut="pad")) == pad
    projection = pad + (16 * 32 + bn(32)) + (32 * 64 + bn(64))
    assert params(build_model("resnet20")) == projection


def test_resnet_block_layout():
    model = build_model("resnet20")
    block = model.layer2[0]
    assert isinstance(block, BasicBlock)
    assert [n for n, _ in block.branch.named_children()] == ["conv1", "bn1", "relu1", "conv2", "bn2"]
    assert isinstance(block.shortcut, nn.Sequential) and block.shortcut.conv.stride == (2, 2)
    assert isinstance(model.layer1[1].shortcut, nn.Identity)
    assert isinstance(block.relu, nn.ReLU)
    assert isinstance(build_model("resnet20", shortcut="pad").layer3[0].shortcut, PadShortcut)
    assert [len(getattr(build_model(n), f"layer{i}")) for n in ("resnet32", "resnet56") for i in (1, 2, 3)] == [5] * 3 + [9] * 3
    r18 = build_model("resnet18")
    assert r18.stem.conv.kernel_size == (3, 3) and r18.stem.conv.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in r18.modules())
    assert [len(getattr(r18, f"layer{i}")) for i in (1, 2, 3, 4)] == [2, 2, 2, 2]
    assert r18.fc.in_features == 512


def test_vgg_skips_pools_that_would_go_below_one_pixel():
    assert sum(isinstance(m, nn.MaxPool2d) for m in build_model("vgg11").modules()) == 5
    small = build_model("vgg16", in_channels=1, input_size=28)
    assert sum(isinstance(m, nn.MaxPool2d) for m in small.modules()) == 4
    assert sum(isinstance(m, nn.Conv2d) for m in small.modules()) == 13
    assert sum(isinstance(m, nn.Conv2d) for m in build_model("vgg11").modules()) == 8
    mlp = build_model("vgg11", classifier="mlp")
    assert [m.out_features for m in mlp.classifier if isinstance(m, nn.Linear)] == [512, 512, 10]


def test_mobilenetv2_uses_cifar_strides():
    model = build_model("mobilenetv2")
    assert model.stem.conv.stride == (1, 1)
    strides = [b.branch.dw.stride[0] for b in model.blocks]
    assert strides == [1, 1, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    # Residual exactly where stride is 1 and channels match (Sandler et al. 2018).
    assert [b.residual for b in model.blocks][:4] == [False, False, True, False]


@pytest.mark.parametrize("name", ALL)
def test_width_mult_scales_parameters(name):
    base = params(build_model(name))
    half = params(build_model(name, width_mult=0.5))
    double = params(build_model(name, width_mult=2.0))
    assert half < base < double
    if name not in ("lenet300",):  # conv/FC-dominated nets scale about quadratically
        assert double / base > 3.0


def test_width_mult_rounds_channel_counts():
    model = build_model("resnet20", width_mult=0.3)
    assert model.stem.conv.out_channels == 5  # round(16 * 0.3 = 4.8)
    assert model.layer3[0].branch.conv1.out_channels == 19  # round(19.2)
    assert build_model("lenet5", width_mult=0.01).conv1.out_channels == 1  # never below one


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "vgg11", "mobilenetv2"])
def test_depth_mult_scales_blocks(name):
    assert params(build_model(name, depth_mult=0.5)) < params(build_model(name)) < params(build_model(name, depth_mult=2.0))


def test_depth_mult_block_counts_and_lenet_depth_fixed():
    assert [len(getattr(build_model("resnet20", depth_mult=d), "layer1")) for d in (0.1, 0.5, 1.0, 2.0)] == [1, 2, 3, 6]
    deep = build_model("vgg11", depth_mult=2.0)
    assert sum(isinstance(m, nn.Conv2d) for m in deep.modules()) == 16
    assert params(build_model("lenet5", depth_mult=3.0)) == 431_080


def test_explicit_stage_lists_for_resnets():
    model = build_model("resnet20", blocks=[1, 2, 1], widths=[8, 24, 40])
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [1, 2, 1]
    assert model.layer3[0].branch.conv2.out_channels == 40
    with pytest.raises(ModelError, match="blocks"):
        build_model("resnet20", blocks=[1, 2])


@pytest.mark.parametrize("name", ALL)
def test_spec_round_trip_through_json(name):
    model = build_model(name, num_classes=5, in_channels=2, input_size=(30, 30), width_mult=0.5, depth_mult=0.5)
    spec = model_spec(model)
    assert spec["name"] == name
    assert spec["kwargs"]["in_channels"] == 2 and spec["kwargs"]["input_size"] == [30, 30]
    rebuilt = model_from_spec(json.loads(json.dumps(spec)))
    a, b = model.state_dict(), rebuilt.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    assert model_spec(rebuilt) == spec


def test_spec_records_resolved_defaults_and_family_options():
    spec = model_spec(build_model("resnet56"))
    assert spec == {
        "name": "resnet56",
        "kwargs": {"num_classes": 10, "in_channels": 3, "input_size": [32, 32], "width_mult": 1.0,
                   "depth_mult": 1.0, "shortcut": "projection", "blocks": None, "widths": None},
    }
    assert model_spec(build_model("lenet5"))["kwargs"]["input_size"] == [28, 28]


def test_spec_is_a_copy():
    model = build_model("lenet300")
    model_spec(model)["kwargs"]["num_classes"] = 99
    assert model.netrazor_spec["kwargs"]["num_classes"] == 10


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: build_model("resnet21"), "unknown model"),
        (lambda: build_model("lenet5", shortcut="pad"), "does not take shortcut"),
        (lambda: build_model("resnet20", shortcut="zero"), "unknown shortcut"),
        (lambda: build_model("vgg11", classifier="big"), "unknown classifier"),
        (lambda: build_model("lenet5", num_classes=0), "num_classes"),
        (lambda: build_model("lenet5", width_mult=0), "width_mult"),
        (lambda: build_model("lenet5", input_size=8), "at least 16x16"),
        (lambda: build_model("lenet5", input_size="big"), "input_size"),
        (lambda: model_spec(nn.Linear(2, 2)), "not built by netrazor.models.build_model"),
        (lambda: model_from_spec({"kwargs": {}}), "model spec"),
    ],
)
def test_bad_arguments_raise_model_error(call, match):
    with pytest.raises(ModelError, match=match):
        call()


@settings(max_examples=15, deadline=None)
@given(
    name=st.sampled_from(["lenet300", "lenet5", "resnet20", "vgg11", "mobilenetv2"]),
    classes=st.integers(1, 20),
    channels=st.integers(1, 4),
    size=st.integers(16, 36),
    width=st.floats(0.05, 1.0),
    depth=st.floats(0.1, 1.0),
)
def test_any_shape_and_multiplier_builds_and_round_trips(name, classes, channels, size, width, depth):
    model = build_model(name, num_classes=classes, in_channels=channels, input_size=size,
                        width_mult=width, depth_mult=depth).eval()
    with torch.no_grad():
        assert model(torch.randn(1, channels, size, size)).shape == (1, classes)
    rebuilt = model_from_spec(json.loads(json.dumps(model_spec(model))))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
