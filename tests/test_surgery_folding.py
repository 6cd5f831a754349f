"""Exact folding of linearised sections: BN, linear∘linear, conv∘conv, residual blocks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from netrazor.errors import SurgeryError
from netrazor.surgery import activation_names, check_equivalence, fold_linear_sections, replace_activation
from netrazor.surgery.compose import NotExact, compose_conv
from test_surgery_support import make, n_params, randomize_bn, real_looking


def _linearise(model, names):
    out = copy.deepcopy(model)
    for n in names:
        replace_activation(out, n)
    return out


def _weighted(model):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_mlp_without_rectifiers_folds_to_one_linear():
    model, x = make("mlp")
    lin = _linearise(model, activation_names(model))
    folded, report = fold_linear_sections(lin, x)
    assert len(_weighted(folded)) == 1
    assert [f["kind"] for f in report["folds"]] == ["linear", "linear"]
    with torch.no_grad():
        torch.testing.assert_close(folded(x), lin(x), rtol=1e-5, atol=1e-5)
    assert n_params(folded) < n_params(lin)


def test_bottleneck_linear_pair_is_declined():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 4), nn.Identity(), nn.Linear(4, 64)).eval()
    folded, report = fold_linear_sections(model, torch.randn(8, 64))
    assert folded is model  # nothing applied
    assert "declined" in report["refused"][0]["reason"]


def test_bn_folds_into_conv_and_linear():
    model, x = make("cnn")
    folded, report = fold_linear_sections(model, x)
    assert sum(f["kind"] == "bn" for f in report["folds"]) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert report["layers_after"]["rectifiers"] == 3  # rectifiers stay: only BN folded
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("time_kernels", [True, False])
def test_conv_chain_composes_to_larger_kernel_and_keeps_the_faster_form(time_kernels):
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4 * 7 * 7, 3),
    )).eval()
    x = real_looking((3, 16, 16))
    lin = _linearise(model, ["2", "4"])
    folded, report = fold_linear_sections(lin, x, time_kernels=time_kernels, timing_repeats=3)
    conv = [f for f in report["folds"] if f["kind"] == "conv"]
    first = conv[0]
    assert first["kernel"] == [5, 5]
    assert first["kept"] in ("folded", "unfolded")
    if time_kernels:
        assert set(first["timing"]) >= {"b1", "b64", "keep"}
        assert first["timing"]["keep"] == first["kept"]
    convs = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    if first["kept"] == "folded":
        assert any(c.kernel_size == (5, 5) and c.stride == (2, 2) for c in convs)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), lin(x), rtol=1e-5, atol=1e-5)


def test_padded_second_conv_is_refused_exactly():
    a = nn.Conv2d(3, 4, 3, padding=1)
    b = nn.Conv2d(4, 4, 3, padding=1)
    with pytest.raises(NotExact, match="border"):
        compose_conv(a, b)


class LinearisableBlock(nn.Module):
    """conv3x3-bn-relu-conv1x1-bn (+ identity or projection) - relu: foldable to ONE conv once linear."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + self.shortcut(x))


@pytest.mark.parametrize("cin, cout, stride, kind", [(8, 8, 1, "identity"), (8, 12, 2, "projection")])
def test_linear_residual_block_folds_into_one_conv(cin, cout, stride, kind):
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, cin, 3, padding=1), nn.ReLU(), LinearisableBlock(cin, cout, stride),
                                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cout, 5))).eval()
    x = real_looking((3, 16, 16))
    lin = _linearise(model, ["2.relu1", "2.relu"])
    folded, report = fold_linear_sections(lin, x)
    kinds = [f["kind"] for f in report["folds"]]
    assert kind in kinds
    block_convs = [n for n, m in folded.named_modules() if isinstance(m, nn.Conv2d) and n.startswith("2.")]
    assert len(block_convs) == 1, block_convs  # branch + shortcut became one conv
    assert "add" not in folded.code
    with torch.no_grad():
        torch.testing.assert_close(folded(x), lin(x), rtol=1e-5, atol=1e-5)
    assert report["max_rel_error"] <= 1e-5


def test_resnet_branch_with_padded_3x3s_folds_bn_only_or_refuses_in_strict_mode():
    model, x = make("resnet")
    lin = _linearise(model, ["layer1.relu1", "layer1.relu2"])
    folded, report = fold_linear_sections(lin, x)
    refused = [r for r in report["refused"] if r["kind"] == "conv"]
    assert any(r["at"] == ["layer1.conv1", "layer1.conv2"] for r in refused)
    assert report["layers_after"]["batchnorm"] == 0
    with torch.no_grad():
        torch.testing.assert_close(folded(x), lin(x), rtol=1e-5, atol=1e-5)
    before = copy.deepcopy(lin.state_dict())
    with pytest.raises(SurgeryError, match="cannot be folded exactly"):
        fold_linear_sections(lin, x, strict=True)
    assert all(torch.equal(before[k], v) for k, v in lin.state_dict().items())


def test_check_equivalence_raises_and_reports():
    model, x = make("mlp")
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[4].bias += 1.0
    assert check_equivalence(model, copy.deepcopy(model), x) == 0.0
    with pytest.raises(SurgeryError, match="changed the model's outputs"):
        check_equivalence(model, other, x)


def test_untraceable_model_is_refused_clearly():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace
                return self.fc(x)
            return -self.fc(x)

    with pytest.raises(SurgeryError, match="fx cannot trace"):
        fold_linear_sections(Branchy(), torch.randn(2, 4))


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from netrazor.surgery.compose import merge_parallel  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(ka=st.integers(1, 3), kb=st.integers(1, 3), sa=st.integers(1, 2), sb=st.integers(1, 2), pa=st.integers(0, 2),
       depthwise=st.booleans(), bias=st.booleans(), size=st.integers(9, 13))
def test_compose_conv_equals_sequential_application(ka, kb, sa, sb, pa, depthwise, bias, size):
    torch.manual_seed(ka * 100 + kb * 10 + sa + sb + pa)
    a = nn.Conv2d(4, 4, ka, stride=sa, padding=pa, groups=4 if depthwise else 1, bias=bias)
    b = nn.Conv2d(4, 3, kb, stride=sb, padding=0, bias=True)
    x = torch.randn(2, 4, size, size)
    with torch.no_grad():
        ref = b(a(x))
        got = compose_conv(a, b)(x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(kc=st.sampled_from([1, 3, 5]), kd=st.sampled_from([1, 3]), s=st.integers(1, 2), size=st.integers(8, 11))
def test_merge_parallel_equals_sum(kc, kd, s, size):
    torch.manual_seed(kc + kd + s)
    c = nn.Conv2d(3, 5, kc, stride=s, padding=kc // 2)
    d = nn.Conv2d(3, 5, kd, stride=s, padding=kd // 2)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = c(x) + d(x)
        got = merge_parallel(c, d)(x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_dropout_between_linears_is_dropped_in_eval():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.Dropout(0.5), nn.Linear(6, 4)).eval()
    folded, report = fold_linear_sections(model, torch.randn(5, 8))
    assert len(_weighted(folded)) == 1


def test_bn_before_linear_and_unpadded_conv_folds_but_not_before_padded_conv():
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.BatchNorm2d(6), nn.Conv2d(6, 6, 3),
        nn.ReLU(), nn.BatchNorm2d(6), nn.Conv2d(6, 4, 3, padding=1), nn.Flatten(), nn.BatchNorm1d(4 * 36),
        nn.Linear(4 * 36, 3),
    )).eval()
    x = real_looking((3, 8, 8))
    folded, report = fold_linear_sections(model, x)
    bn_into = {f["into"] for f in report["folds"] if f["kind"] == "bn"}
    assert {"0", "4", "10"} <= bn_into
    assert any(r["at"] == ["6", "7"] and "padding" in r["reason"] for r in report["refused"])
    assert sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in folded.modules()) == 1
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_depthwise_then_pointwise_is_kept_unfolded_without_timing_and_grouped_identity_merges():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Identity(), nn.Conv2d(8, 16, 1)).eval()
    x = torch.randn(2, 8, 10, 10)
    folded, report = fold_linear_sections(model, x, time_kernels=False)
    rec = report["folds"][0]
    assert rec["kept"] == "unfolded" and rec["macs_folded"] > rec["macs_unfolded"]
    assert folded is model

    class DwResidual(nn.Module):
        def __init__(self):
            super().__init__()
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)

        def forward(self, x):
            return self.dw(x) + x

    block = DwResidual().eval()
    folded, report = fold_linear_sections(block, x)
    assert [f["kind"] for f in report["folds"]] == ["identity"]
    assert folded.dw.groups == 8 and "add" not in folded.code
    with torch.no_grad():
        torch.testing.assert_close(folded(x), block(x), rtol=1e-5, atol=1e-5)
