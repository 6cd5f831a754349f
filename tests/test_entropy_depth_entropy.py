"""Rectifier entropy: counting rule, exact values, streaming, plots, feeding-layer links."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from netrazor.errors import ModelError
from netrazor.methods.entropy_depth import (
    EntropyMeter,
    binary_entropy,
    find_rectifiers,
    link_rectifiers,
    plot_entropy,
    rectifier_entropy,
)


class Feed(nn.Module):
    """A 'model' that hands fixed tensors to a rectifier: lets tests choose z exactly."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.act = act

    def forward(self, z):
        return self.act(z)


def entropy_of(z_batches, act=None, channel_dim=1):
    model = Feed(act or nn.ReLU())
    return rectifier_entropy(model, z_batches, channel_dim=channel_dim)["act"]


def test_always_positive_input_has_zero_entropy_and_is_linear():
    z = torch.rand(8, 3, 4, 4) + 0.1
    e = entropy_of([z])
    assert e.entropy == 0.0
    assert e.is_linear
    assert bool(e.always_on.all())
    assert e.channel_entropy.tolist() == [0.0, 0.0, 0.0]


def test_half_positive_channels_give_one_bit():
    z = torch.tensor([[1.0, -1.0], [-2.0, 3.0], [4.0, 5.0], [-1.0, -6.0]])  # [B=4, C=2]
    e = entropy_of([z])
    assert e.p.tolist() == [0.5, 0.5]
    assert e.channel_entropy.tolist() == [1.0, 1.0]
    assert e.entropy == 1.0


def test_exact_zeros_are_excluded_from_the_count():
    # channel 0: two positive, two negative, four exact zeros -> p = 0.5 (not 2/8)
    z = torch.tensor([1.0, -1.0, 2.0, -2.0, 0.0, 0.0, 0.0, 0.0]).view(8, 1)
    e = entropy_of([z])
    assert e.p.item() == 0.5
    assert e.positive.item() == 2 and e.negative.item() == 2
    assert e.entropy == 1.0


def test_all_zero_channel_is_constant_off_and_layer_mean_skips_constant_channels():
    # channel 0: all zeros (constant, always off); channel 1: p = 1/4; channel 2: always on
    z = torch.tensor([[0.0, 1.0, 1.0], [0.0, -1.0, 2.0], [0.0, -1.0, 3.0], [0.0, -1.0, 4.0]])
    e = entropy_of([z])
    h1 = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert e.always_off.tolist() == [True, False, False]
    assert e.constant.tolist() == [True, False, True]
    assert e.entropy == pytest.approx(h1)  # mean over the one non-constant channel only
    assert not e.is_linear


def test_streaming_over_batches_equals_one_pass_and_counts_spatial_positions():
    torch.manual_seed(0)
    z = torch.randn(12, 5, 3, 3)
    one = entropy_of([z])
    many = entropy_of(list(z.split(5)))
    assert torch.equal(one.positive, many.positive)
    assert torch.equal(one.negative, many.negative)
    assert one.entropy == many.entropy
    assert one.positions == 12 * 9
    expected = (z > 0).sum(dim=(0, 2, 3))
    assert one.positive.tolist() == expected.tolist()


def test_sign_rule_for_leaky_gelu_and_last_channel_dim():
    z = torch.tensor([[[1.0, -1.0]], [[1.0, 1.0]]])  # [B=2, T=1, C=2]
    for act in (nn.LeakyReLU(0.1), nn.GELU(), nn.PReLU()):
        e = entropy_of([z], act=act, channel_dim=-1)
        assert e.p.tolist() == [1.0, 0.5]
        assert e.channel_entropy.tolist() == [0.0, 1.0]


def test_binary_entropy_endpoints_and_symmetry():
    p = torch.tensor([0.0, 1.0, 0.5, 0.1, 0.9])
    h = binary_entropy(p)
    assert h[0] == 0 and h[1] == 0 and h[2] == 1
    assert h[3] == pytest.approx(h[4].item())
    assert not torch.isnan(h).any()


def test_hooks_are_removed_and_mode_restored():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2), nn.ReLU())
    model.train()
    with EntropyMeter(model) as meter:
        model(torch.randn(3, 4))
    assert meter.calls == {"1": 1, "3": 1}
    assert not model[1]._forward_pre_hooks
    rectifier_entropy(model, [torch.randn(3, 4)])
    assert model.training
    assert not model[3]._forward_pre_hooks


def test_databundle_source_uses_the_requested_split():
    from netrazor.data import make_synthetic

    data = make_synthetic(n_train=40, n_val=10, n_test=10, shape=(1, 8, 8))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.ReLU(), nn.Linear(6, 4))
    ent = rectifier_entropy(model, data, split="val")
    assert ent["2"].positions == 10
    ent = rectifier_entropy(model, data, max_samples=25)
    assert ent["2"].positions == 25


def test_plot_writes_a_png(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
    ent = rectifier_entropy(model, [torch.randn(32, 4)])
    out = tmp_path / "entropy.png"
    plot_entropy(ent, out, per_channel=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Block(nn.Module):
    def __init__(self, c, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c if stride == 1 else c // 2, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.short = nn.Sequential(nn.Conv2d(c // 2, c, 1, stride, bias=False), nn.BatchNorm2d(c)) if stride != 1 else nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + self.short(x))


class TinyRes(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.b1 = Block(4)
        self.b2 = Block(8, stride=2)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.b2(self.b1(self.relu(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


def test_feeding_layers_follow_the_graph_through_bn_and_residual_adds():
    links = link_rectifiers(TinyRes())
    assert links.traced
    assert links.feeding["relu"] == ["stem"]
    assert links.feeding["b1.relu1"] == ["b1.conv1"]
    # identity shortcut stops at the previous rectifier: only the branch conv feeds relu2
    assert links.feeding["b1.relu2"] == ["b1.conv2"]
    # projection shortcut: both the branch conv and the shortcut conv feed the post-add ReLU
    assert links.feeding["b2.relu2"] == ["b2.conv2", "b2.short.0"]
    assert links.producer["b1.relu1"] == "b1.bn1"
    assert links.producer["b1.relu2"] is None  # an add, not a module
    assert [n for n, _ in find_rectifiers(TinyRes())] == ["relu", "b1.relu1", "b1.relu2", "b2.relu1", "b2.relu2"]


def test_a_rectifier_module_called_twice_is_refused():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.relu = nn.Linear(3, 3), nn.Linear(3, 3), nn.ReLU()

        def forward(self, x):
            return self.relu(self.b(self.relu(self.a(x))))

    with pytest.raises(ModelError, match="own nn.ReLU"):
        link_rectifiers(Shared())
