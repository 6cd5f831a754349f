"""Always-off / constant units are removed and their constant folded into the next bias, exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netrazor.surgery import fold_constant_channels
from test_surgery_support import make, n_params


def _mlp_with_dead_and_constant_units():
    model, x = make("mlp")
    with torch.no_grad():
        model[0].bias[[3, 7]] = -1e3  # units 3, 7: ReLU input always < 0 -> output 0 (always off)
        model[0].weight[11].zero_()
        model[0].bias[11] = 2.5  # unit 11: ReLU output is the constant 2.5
    return model, x


def test_mlp_dead_and_constant_units_removed_and_folded():
    model, x = _mlp_with_dead_and_constant_units()
    small, report = fold_constant_channels(model, [x, 3 * x])
    assert sorted(report["removed"]["0"]) == [3, 7, 11]
    assert small[0].out_features == 29 and small[2].in_features == 29
    assert n_params(small) < n_params(model)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)
    assert report["max_rel_error"] <= 1e-5
    assert report["values"]["0"][report["removed"]["0"].index(11)] == pytest.approx(2.5)


def test_removed_units_are_exactly_the_dead_ones_on_the_data():
    model, x = make("mlp")
    with torch.no_grad():
        h1 = model[1](model[0](x))
        h2 = model[3](model[2](h1))
    dead1 = [i for i in range(32) if bool((h1[:, i] == 0).all())]
    dead2 = [i for i in range(24) if bool((h2[:, i] == 0).all())]
    small, report = fold_constant_channels(model, x)
    assert report["removed"].get("0", []) == dead1
    assert report["removed"].get("2", []) == dead2
    assert small[0].out_features == 32 - len(dead1)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)


def test_nothing_constant_means_nothing_removed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    small, report = fold_constant_channels(model, torch.randn(64, 4))
    assert report["removed"] == {}
    assert n_params(small) == n_params(model)


def test_conv_zero_constant_removed_nonzero_into_padded_conv_refused():
    model, x = make("cnn")  # conv0-bn1-relu2 feeds conv3 (3x3, padding 1)
    with torch.no_grad():
        model[0].weight[[2, 5]] = 0
        model[1].bias[2] = -5.0  # channel 2 after BN+ReLU: constant 0 -> exact to remove
        model[1].bias[5] = 5.0  # channel 5: constant > 0 into a zero-padded conv -> border inexact
    small, report = fold_constant_channels(model, x)
    assert report["removed"]["0"] == [2]
    refused = [r for r in report["refused"] if r["root"] == "0"]
    assert [r["channel"] for r in refused] == [5]
    assert "zero-padded" in refused[0]["reason"]
    assert small[0].out_channels == 7 and small[3].in_channels == 7
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)


def test_nonzero_constant_into_unpadded_conv_is_folded_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.ReLU(),
                          nn.Conv2d(4, 5, 1), nn.Flatten(), nn.Linear(5 * 6 * 6, 3)).eval()
    with torch.no_grad():
        model[0].weight[1] = 0
        model[0].bias[1] = 0.7
    x = torch.randn(4, 3, 8, 8)
    small, report = fold_constant_channels(model, x)
    assert report["removed"] == {"0": [1]}
    assert small[2].in_channels == 5
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)


def test_always_on_units_are_reported():
    model, x = make("mlp")
    with torch.no_grad():
        model[0].bias[4] = 1e3
    _, report = fold_constant_channels(model, x)
    assert 4 in report["always_on"]["1"]


def test_constant_only_on_the_given_data_is_judged_on_that_data():
    model, x = _mlp_with_dead_and_constant_units()
    small, report = fold_constant_channels(model, x)
    # random inputs may switch a 'dead' unit on; the pass documents and checks on the data only
    assert report["removed"]


def test_always_on_layer_is_linearised_then_folds():
    from netrazor.surgery import fold_linear_sections, linearise_always_on

    model, x = make("mlp")
    with torch.no_grad():
        model[2].bias += 1e3  # the second rectifier's input is always positive: identity on the data
    lin, report = linearise_always_on(model, x)
    assert report["linearised"] == ["3"]
    assert isinstance(lin[3], nn.Identity) and isinstance(model[3], nn.ReLU)
    folded, _ = fold_linear_sections(lin, x)
    assert sum(isinstance(m, nn.Linear) for m in folded.modules()) == 2
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-3)
