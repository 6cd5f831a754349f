"""Shape-aware exact folds (1×1 maps), foldable-rectifier classification, approximate pair folding."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from netrazor.errors import SurgeryError
from netrazor.models import build_model
from netrazor.surgery import fold_linear_sections, load_model, replace_activation, save_model
from netrazor.surgery.approximate import approximate_pairs, fold_pair_approximately
from netrazor.surgery.foldable import foldable_rectifiers
from test_surgery_support import randomize_bn


def _weighted(model):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _head(spatial_in: int):
    """conv3×3 → BN → (linear) → conv3×3 → BN → (linear) → adaptive pool → flatten → Linear."""
    torch.manual_seed(0)
    return randomize_bn(nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Identity(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Identity(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )).eval()


def test_stage_on_a_one_pixel_map_folds_exactly_into_the_classifier():
    model = _head(1)
    x = torch.randn(16, 4, 1, 1)
    folded, report = fold_linear_sections(model, x)
    kinds = [f["kind"] for f in report["folds"] if f.get("kept", "folded") == "folded"]
    assert kinds.count("centre-tap") == 2 and "noop-pool" in kinds and "conv-linear" in kinds
    assert len(_weighted(folded)) == 1 and isinstance(_weighted(folded)[0], nn.Linear)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_on_a_two_pixel_map_the_padded_convs_are_not_shrunk():
    model = _head(2)
    x = torch.randn(16, 4, 2, 2)
    folded, report = fold_linear_sections(model, x)
    kinds = [f["kind"] for f in report["folds"]]
    assert "centre-tap" not in kinds and "noop-pool" not in kinds and "conv-linear" not in kinds
    assert sum(isinstance(m, nn.Conv2d) for m in folded.modules()) == 2
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_vgg11_on_28px_linear_stage5_disappears_exactly():
    torch.manual_seed(0)
    model = randomize_bn(build_model("vgg11", num_classes=10, in_channels=1, input_size=(28, 28), width_mult=0.125)).eval()
    for name in ("features.relu5_1", "features.relu5_2"):
        replace_activation(model, name)
    x = torch.randn(8, 1, 28, 28)
    folded, report = fold_linear_sections(model, x)
    names = {n for n, _ in folded.named_modules()}
    assert "features.conv5_1" not in names and "features.conv5_2" not in names
    assert sum(isinstance(m, nn.Conv2d) for m in folded.modules()) == 6
    assert report["max_rel_error"] < 1e-5


class _Tiny(nn.Module):
    """conv-bn-relu → conv-bn-relu → maxpool → conv-bn-relu(at 1×1 after the pool) → flatten → Linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1, self.r1 = nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()
        self.c2, self.b2, self.r2 = nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.c3, self.b3, self.r3 = nn.Conv2d(6, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU()
        self.flat, self.fc = nn.Flatten(), nn.Linear(5, 3)

    def forward(self, x):
        x = self.r2(self.b2(self.c2(self.r1(self.b1(self.c1(x))))))
        return self.fc(self.flat(self.r3(self.b3(self.c3(self.pool(x))))))


def test_foldable_rectifiers_classifies_by_what_surgery_can_remove():
    model = _Tiny().eval()
    got = foldable_rectifiers(model, torch.randn(2, 2, 2, 2))
    # r1 sits between two padded convs on a 2×2 map; r2 is followed by a max-pool (no fold);
    # r3's conv runs on a 1×1 map and flatten → Linear follows: exact.
    assert got == {"r1": "approximate", "r3": "exact"}
    assert foldable_rectifiers(model, torch.randn(2, 2, 2, 2), ["r1"]) == {"r1": "approximate"}


def _pair_model(first_kernel: int, bias: bool):
    torch.manual_seed(1)
    return randomize_bn(nn.Sequential(
        nn.Conv2d(3, 8, first_kernel, padding=first_kernel // 2, bias=bias), nn.Identity(),
        nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 6 * 6, 4),
    )).eval()


def test_approximate_pairs_only_lists_linearised_padded_pairs():
    model = _pair_model(3, True)
    x = torch.randn(4, 3, 6, 6)
    pairs = approximate_pairs(model, x)
    assert [(p.first, p.second) for p in pairs] == [("0", "2")]
    assert pairs[0].macs_pair == (8 * 3 * 9 + 6 * 8 * 9) * 36 and pairs[0].macs_folded == 6 * 3 * 9 * 36
    relu = copy.deepcopy(model)
    relu[1] = nn.ReLU()  # still non-linear: nothing to fold
    assert approximate_pairs(relu, x) == []


def test_least_squares_recovers_an_exactly_representable_pair():
    # A 1×1 conv without bias then a padded 3×3 conv IS one padded 3×3 conv (A commutes with the
    # zero padding): the least-squares fit must find it, so the folded model equals the original.
    model = _pair_model(1, False)
    x = torch.randn(64, 3, 6, 6)
    pair = approximate_pairs(model, x)[0]
    folded, rep = fold_pair_approximately(model, pair, [x[:32], x[32:]], ridge=1e-9)
    assert rep["fit_rel_error"] < 1e-8
    assert isinstance(folded[2], nn.Identity) and folded[0].out_channels == 6
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    assert isinstance(model[2], nn.Conv2d)  # the argument is untouched


def test_least_squares_beats_the_centre_crop_on_a_real_pair():
    model = _pair_model(3, True)
    x = torch.randn(128, 3, 6, 6)
    pair = approximate_pairs(model, x)[0]
    _, lsq = fold_pair_approximately(model, pair, x, init="lstsq")
    _, centre = fold_pair_approximately(model, pair, x, init="centre")
    assert 0 < lsq["fit_rel_error"] < centre["fit_rel_error"]
    with pytest.raises(SurgeryError, match="unknown init"):
        fold_pair_approximately(model, pair, x, init="magic")


def test_an_approximately_folded_zoo_model_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = build_model("vgg11", num_classes=10, in_channels=1, input_size=(28, 28), width_mult=0.125).eval()
    replace_activation(model, "features.relu3_1")
    x = torch.randn(16, 1, 28, 28)
    pair = approximate_pairs(model, x)[0]
    assert (pair.first, pair.second, pair.first_bn) == ("features.conv3_1", "features.conv3_2", "features.bn3_1")
    folded, _ = fold_pair_approximately(model, pair, x)
    save_model(folded, tmp_path / "m", example_input=x[:1])
    back = load_model(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x), folded(x))


def _pooled(size: int):
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * (size // 2) ** 2, 4),
    )).eval()
    return model, torch.randn(8, 3, size, size)


def test_a_conv_skips_the_border_a_floor_pool_never_reads(tmp_path):
    from netrazor import measure

    model, x = _pooled(7)  # 2×2 pool on 7×7 reads rows/cols 0-5 only
    folded, report = fold_linear_sections(model, x, time_kernels=False)
    trims = [f for f in report["folds"] if f["kind"] == "trim"]
    assert len(trims) == 1 and trims[0]["rows_cols_dropped"] == [1, 1]
    conv = [m for m in folded.modules() if isinstance(m, nn.Conv2d)][0]
    assert tuple(conv.padding) == (0, 0)
    assert measure.count_macs(folded, (3, 7, 7)) < measure.count_macs(model, (3, 7, 7))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    save_model(folded, tmp_path / "t", example_input=x[:1])  # F.pad is a whitelisted function
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "t")(x), folded(x))
    even, xe = _pooled(8)  # an even map is read entirely: nothing to trim
    _, rep_even = fold_linear_sections(even, xe, time_kernels=False)
    assert not [f for f in rep_even["folds"] if f["kind"] == "trim"]
    _, rep_off = fold_linear_sections(model, x, time_kernels=False, trim_borders=False)
    assert not [f for f in rep_off["folds"] if f["kind"] == "trim"]
