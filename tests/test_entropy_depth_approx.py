"""Fold-aware EASIER ordering and approximate folds accepted/refused by the validation δ rule."""

from __future__ import annotations

import copy
import importlib
import json

import torch
from torch import nn

from netrazor.data import make_synthetic
from netrazor.methods.base import Adapter
from netrazor.methods.entropy_depth import EasierMethod, rectifier_entropy
from netrazor.methods.entropy_depth.approx import approximate_folds
from netrazor.surgery import replace_activation

train = importlib.import_module("netrazor.train")

FAST = dict(measure_latency=False, retrain_epochs=1, finish_samples=256, eval_test=False)


def bundle():
    return make_synthetic(n_train=256, n_val=128, n_test=128, num_classes=4, shape=(1, 8, 8), seed=0)


def adapter(data, epochs=2, lr=0.05):
    cfg = train.TrainConfig(epochs=epochs, batch_size=64, lr=lr, optimizer="sgd", schedule="constant", seed=0)
    return Adapter(data=data, train_config=cfg)


def cnn():
    """relu1 sits between two padded convs (approximately foldable); relu2 before a max-pool (not)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 4 * 4, 4),
    )


def _convs(model):
    return sum(isinstance(m, nn.Conv2d) for m in model.modules())


def _trained_with_low_entropy_relu2(data, ad):
    model = cnn()
    ad.train(model, epochs=2)
    with torch.no_grad():  # relu2 almost always on: the lowest entropy, but linearising it folds nothing
        model[4].bias.add_(4.0)
    ent = rectifier_entropy(model, data)
    assert ent["5"].entropy < ent["2"].entropy
    return model


def test_foldable_first_spends_the_round_on_the_rectifier_that_removes_a_layer():
    data = bundle()
    ad = adapter(data)
    model = _trained_with_low_entropy_relu2(data, ad)
    _, plain = EasierMethod(delta=1.0, rounds=1, order="entropy", approx_fold="off", **FAST).run(copy.deepcopy(model), ad)
    assert plain["rounds"][0]["linearised"] == ["5"] and plain["rounds"][0]["foldable"] is None
    _, aware = EasierMethod(delta=1.0, rounds=1, order="foldable-first", approx_fold="off", **FAST).run(copy.deepcopy(model), ad)
    assert aware["rounds"][0]["linearised"] == ["2"] and aware["rounds"][0]["foldable"] == "approximate"


def test_easier_with_approximate_fold_removes_a_conv_layer():
    data = bundle()
    ad = adapter(data)
    model = _trained_with_low_entropy_relu2(data, ad)
    out, rec = EasierMethod(delta=1.0, rounds=1, approx_fold="lstsq", approx_epochs=1, **FAST).run(model, ad)
    folds = rec["approx_folds"]
    assert len(folds) == 1 and folds[0]["accepted"] is True and folds[0]["from"][0] == "0"
    assert 0 <= folds[0]["fit_rel_error"] < 1
    assert _convs(out) == 1
    assert rec["macs"] < rec["macs_dense"]
    json.dumps(rec)


def test_an_approximate_fold_below_the_floor_is_refused_with_the_reason():
    data = bundle()
    ad = adapter(data)
    model = cnn()
    ad.train(model, epochs=1)
    replace_activation(model, "2")
    knobs = EasierMethod(approx_fold="lstsq", approx_epochs=0, **FAST)
    batches = knobs.finish_batches(ad)
    before = copy.deepcopy(model.state_dict())
    out, reports = approximate_folds(model, ad, knobs, floor=1.01, batches=batches)
    assert len(reports) == 1 and reports[0]["accepted"] is False
    assert "below dense - delta" in reports[0]["reason"]
    assert out is model and _convs(out) == 2
    assert all(torch.equal(before[k], v) for k, v in out.state_dict().items())
