"""Identity probe: linear CKA, relative residual norm, effective depth, plot."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from netrazor.errors import ConfigError
from netrazor.methods.ebcle import identity_probe, linear_cka, plot_probe
from netrazor.methods.ebcle.probe import summarise
from netrazor.models import build_model


def test_cka_of_identical_and_transformed_representations_is_one():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, 4, 4, generator=g)
    q, _ = torch.linalg.qr(torch.randn(128, 128, generator=g, dtype=torch.float64))
    rotated = (x.reshape(64, -1).double() @ q) * 3.0 + 1.5  # rotation, isotropic scale, offset
    for debiased in (False, True):
        assert linear_cka(x, x, debiased) == pytest.approx(1.0, abs=1e-9)
        assert linear_cka(x, rotated, debiased) == pytest.approx(1.0, abs=1e-6)


def test_cka_of_independent_random_representations_is_small():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2000, 10, generator=g), torch.randn(2000, 12, generator=g)
    assert linear_cka(x, y) < 0.05
    # Wide features on few examples: the plain estimator is biased up, the debiased one is not.
    x, y = torch.randn(100, 4000, generator=g), torch.randn(100, 4000, generator=g)
    biased, debiased = linear_cka(x, y), linear_cka(x, y, debiased=True)
    assert abs(debiased) < 0.1 < biased


def test_cka_partial_dependence_is_between():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(500, 6, generator=g)
    y = torch.cat([x[:, :3], torch.randn(500, 3, generator=g)], 1)
    assert 0.2 < linear_cka(x, y) < 0.9
    with pytest.raises(ConfigError):
        linear_cka(x, y[:10])


def zero_branch(block: nn.Module) -> None:
    nn.init.zeros_(block.branch.bn2.weight)
    nn.init.zeros_(block.branch.bn2.bias)


def test_residual_norm_of_a_zero_branch_block_is_zero():
    model = build_model("resnet20", in_channels=1, input_size=16)
    zero_branch(model.layer1[1])
    rows = {r["name"]: r for r in identity_probe(model, torch.randn(16, 1, 16, 16)).rows}
    assert rows["layer1.1"]["residual"] == 0.0
    assert rows["layer1.2"]["residual"] > 0.1  # an untouched block is not
    assert rows["layer1.1"]["identity_like"] and not rows["layer1.2"]["identity_like"]


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.branch = nn.Sequential(OrderedDict(conv1=nn.Conv2d(c, c, 3, padding=1), relu1=nn.ReLU(),
                                                conv2=nn.Conv2d(c, c, 3, padding=1)))
        self.shortcut = nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.branch(x) + self.shortcut(x))


class ToyResNet(nn.Module):
    def __init__(self, blocks=6, c=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(*[Block(c) for _ in range(blocks)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 3))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


@pytest.mark.parametrize("zeroed,expected", [((3, 4, 5), 3), ((1, 3, 4, 5), 3), ((5,), 5), ((), 6), (range(6), 0)])
def test_probe_reports_the_effective_depth_of_a_toy_residual_net(zeroed, expected):
    torch.manual_seed(0)
    model = ToyResNet()
    for i in zeroed:
        nn.init.zeros_(model.blocks[i].branch.conv2.weight)
        nn.init.zeros_(model.blocks[i].branch.conv2.bias)
    report = identity_probe(model, torch.randn(32, 1, 8, 8))
    assert [r["name"] for r in report.rows] == [f"blocks.{i}" for i in range(6)]
    assert report.effective_depth == expected
    # stem conv + 2 convs per block up to the last active one
    assert report.effective_conv_layers == (1 + 2 * expected if expected else 0)
    assert report.active_blocks == 6 - len(list(zeroed))
    assert report.total_conv_layers == 13
    for i in zeroed:
        assert report.rows[i]["residual"] == 0.0
        # a zero branch after a ReLU output passes x through unchanged: CKA with the previous output is 1
        if i > 0:
            assert report.rows[i]["cka"] == pytest.approx(1.0, abs=1e-9)


def test_probe_on_a_plain_net_uses_cka_and_thresholds():
    torch.manual_seed(0)
    layers = OrderedDict()
    for i in range(4):
        conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        if i >= 2:  # identity kernels: the layer passes its (non-negative) input through
            with torch.no_grad():
                conv.weight.zero_()
                for c in range(4):
                    conv.weight[c, c, 1, 1] = 1.0
        layers[f"conv{i}"] = conv
        layers[f"relu{i}"] = nn.ReLU()
    model = nn.Sequential(layers)
    x = torch.randn(64, 4, 8, 8)
    report = identity_probe(model, x)
    assert [r["name"] for r in report.rows] == ["relu0", "relu1", "relu2", "relu3"]
    assert all(r["residual"] is None for r in report.rows)
    assert report.rows[2]["cka"] == pytest.approx(1.0) and report.rows[3]["cka"] == pytest.approx(1.0)
    assert report.effective_depth == 2 and report.effective_conv_layers == 2
    # a threshold above 1 makes nothing identity-like; criterion "residual" too on a plain net
    assert identity_probe(model, x, cka_threshold=1.01).effective_depth == 4
    assert identity_probe(model, x, criterion="residual").effective_depth == 4
    with pytest.raises(ConfigError):
        identity_probe(model, x, criterion="magic")
    with pytest.raises(ConfigError):
        identity_probe(model, x, blocks=["nope"])


def test_probe_restores_mode_and_plots(tmp_path):
    model = build_model("resnet20", in_channels=1, input_size=16).train()
    report = identity_probe(model, torch.randn(8, 1, 16, 16))
    assert model.training and report.total_blocks == 9 and report.total_conv_layers == 19
    assert report.rows[-1]["conv_depth"] == 19
    path = plot_probe(report, tmp_path / "probe.png", bound_blocks=4)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lesion_column_and_criterion():
    torch.manual_seed(0)
    model = ToyResNet()
    for i in (2, 4, 5):
        nn.init.zeros_(model.blocks[i].branch.conv2.weight)
        nn.init.zeros_(model.blocks[i].branch.conv2.bias)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 3, (64,))
    report = identity_probe(model, x, labels=y, criterion="lesion")
    for i in (2, 4, 5):
        assert report.rows[i]["lesion"] == 0.0  # switching off a zero branch changes nothing
    assert report.effective_depth == max((r["index"] for r in report.rows if r["lesion"] > 0.005), default=0)
    assert all(r["identity_like"] == (r["lesion"] <= 0.005) for r in report.rows)
    assert report.lesion_threshold == 0.005
    with pytest.raises(ConfigError, match="labels"):
        identity_probe(model, x, criterion="lesion")


def test_summarise_reclassifies_saved_rows_and_counts_active_convs():
    torch.manual_seed(0)
    model = ToyResNet()
    for i in (1, 4, 5):
        nn.init.zeros_(model.blocks[i].branch.conv2.weight)
        nn.init.zeros_(model.blocks[i].branch.conv2.bias)
    report = identity_probe(model, torch.randn(32, 1, 8, 8))
    assert [r["convs"] for r in report.rows] == [2] * 6
    assert report.effective_depth == 4 and report.active_blocks == 3
    assert report.active_conv_layers == 1 + 2 * 3  # stem + the convs of the three active blocks
    everything = summarise(report.rows, residual_threshold=10.0)
    assert everything.effective_depth == 0 and everything.active_conv_layers == 1
    assert summarise(report.rows, criterion="cka", cka_threshold=1.01).effective_depth == 6
    with pytest.raises(ConfigError):
        summarise(report.rows, criterion="lesion", lesion_threshold=None)
