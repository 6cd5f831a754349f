"""Static measures against hand counts: MACs of LeNet-5 and ResNet-20, params, non-zeros, bytes.

MAC convention (netrazor.measure.macs): conv and linear multiply-accumulates only. A conv layer
costs Cout·Hout·Wout·Cin·k·k / groups, a linear layer in·out. Bias adds, BN, ReLU, residual adds
and pooling count zero — they are hand-counted below too, to show the total excludes them.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netrazor.errors import ConfigError
from netrazor.measure import count_macs, count_nonzero, count_params, macs_by_module, model_bytes
from netrazor.models import build_model


def conv(cout, hout, wout, cin, k):
    return cout * hout * wout * cin * k * k


def linear(i, o):
    return i * o


def test_lenet5_macs_equal_hand_count():
    # 1x28x28 -> conv1 5x5 (20) -> 20x24x24 -> pool -> 20x12x12 -> conv2 5x5 (50) -> 50x8x8
    # -> pool -> 50x4x4 = 800 -> fc1 500 -> fc2 10.
    hand = (
        conv(20, 24, 24, 1, 5)  # 288,000
        + conv(50, 8, 8, 20, 5)  # 1,600,000
        + linear(800, 500)  # 400,000
        + linear(500, 10)  # 5,000
    )
    assert hand == 2_293_000
    # Not counted: biases (20*24*24 + 50*8*8 + 500 + 10 adds), 3 ReLUs, 2 max-pools.
    not_counted = 20 * 24 * 24 + 50 * 8 * 8 + 500 + 10
    macs = count_macs(build_model("lenet5"), (1, 28, 28))
    assert macs == hand
    assert macs != hand + not_counted


def resnet20_hand_count(shortcut: str) -> int:
    """ResNet-20 on 3x32x32 from the paper's table, layer by layer."""
    total = conv(16, 32, 32, 3, 3)  # stem
    # stage 1: 3 blocks x 2 convs, 16 -> 16 at 32x32
    total += 3 * 2 * conv(16, 32, 32, 16, 3)
    # stage 2: first conv 16 -> 32 stride 2 (16x16 out), then 5 convs 32 -> 32 at 16x16
    total += conv(32, 16, 16, 16, 3) + 5 * conv(32, 16, 16, 32, 3)
    # stage 3: first conv 32 -> 64 stride 2 (8x8 out), then 5 convs 64 -> 64 at 8x8
    total += conv(64, 8, 8, 32, 3) + 5 * conv(64, 8, 8, 64, 3)
    if shortcut == "projection":  # 1x1 stride-2 convs at the two stage changes
        total += conv(32, 16, 16, 16, 1) + conv(64, 8, 8, 32, 1)
    total += linear(64, 10)
    # Not counted: 19 BN layers, 19 ReLUs, 9 residual adds, the global average pool, fc bias.
    return total


@pytest.mark.parametrize("shortcut", ["projection", "pad"])
def test_resnet20_macs_equal_hand_count(shortcut):
    hand = resnet20_hand_count(shortcut)
    assert count_macs(build_model("resnet20", shortcut=shortcut), (3, 32, 32)) == hand


def test_resnet20_projection_hand_count_value():
    # 40.81 M, in line with the ~41 M MACs usually quoted for ResNet-20.
    assert resnet20_hand_count("projection") == 40_813_184


def test_depthwise_convs_count_per_group():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False))
    assert count_macs(model, (8, 10, 10)) == 8 * 10 * 10 * 1 * 3 * 3


def test_macs_by_module_sums_to_total_and_names_layers():
    model = build_model("lenet5")
    per_module = macs_by_module(model, (1, 28, 28))
    assert per_module["Global"] == count_macs(model, (1, 28, 28))
    assert per_module["LeNet5.conv2"] == conv(50, 8, 8, 20, 5)


def test_count_macs_restores_training_mode_and_rejects_bad_shapes():
    model = build_model("resnet20").train()
    count_macs(model, (3, 32, 32))
    assert all(m.training for m in model.modules())
    with pytest.raises(ConfigError, match="input_shape"):
        count_macs(model, (3, 0, 32))


def test_count_params_and_nonzero():
    model = build_model("lenet5")
    assert count_params(model) == 431_080
    assert count_nonzero(model) == 431_080  # random init has no exact zeros
    with torch.no_grad():
        model.fc1.weight[:, :400] = 0  # 500 * 400 zeros
        model.conv1.bias.zero_()  # 20 zeros
    assert count_params(model) == 431_080
    assert count_nonzero(model) == 431_080 - 200_000 - 20


def test_tied_weights_count_once():
    a = nn.Linear(4, 4)
    model = nn.Sequential(a, nn.ReLU(), a)
    assert count_params(model) == 20
    assert model_bytes(model) == 80


def test_model_bytes_is_float32_params_plus_float_buffers():
    model = build_model("resnet20")
    bn_channels = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    # running_mean + running_var per BN channel; num_batches_tracked (int64) is excluded.
    assert model_bytes(model) == 4 * (count_params(model) + 2 * bn_channels)
    assert model_bytes(build_model("lenet300")) == 4 * 266_610


def test_macs_follow_the_model_dtype():
    # A float64 model gets a float64 probe input (a float32 one would fail inside conv).
    assert count_macs(build_model("lenet5").double(), (1, 28, 28)) == 2_293_000
