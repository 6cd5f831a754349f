"""EbcleMethod (methods contract, real Trainer) and the `netrazor depth-bound` command."""

from __future__ import annotations

import json

import pytest

from netrazor.cli import main
from netrazor.data import make_synthetic
from netrazor.errors import ModelError
from netrazor.methods.base import Adapter
from netrazor.methods.ebcle import EbcleMethod
from netrazor.models import build_model
from netrazor.surgery import save_model
from netrazor.train import TrainConfig


def test_knobs_are_validated():
    with pytest.raises(TypeError):
        EbcleMethod(no_such_knob=1)
    for bad in (dict(keep="bytes"), dict(rule="nope"), dict(max_depth=0), dict(entropy_mode="rgb"), dict(epochs=0),
                dict(budget=0), dict(keep="width", budget=0.5), dict(round_to=0), dict(round_to=8.0)):
        with pytest.raises(ValueError):
            EbcleMethod(**bad)
    with pytest.raises(ValueError, match="bad options"):
        EbcleMethod(rule="fixed", rule_options={"width": 3})
    with pytest.raises(ValueError):
        EbcleMethod(rule_options={"k": -1.0})


def test_run_shapes_and_trains_through_the_adapter():
    data = make_synthetic(n_train=96, n_val=32, n_test=32, num_classes=3, shape=(1, 16, 16), seed=0)
    adapter = Adapter(data=data, train_config=TrainConfig(epochs=1, batch_size=32, lr=0.05))
    model = build_model("resnet20", num_classes=3, in_channels=1, input_size=16)
    shaped, record = EbcleMethod(rule="fixed", rule_options={"depth": 7}).run(model, adapter)
    assert record["bound"] == 7 and record["layers"] == 7 < record["layers_dense"] == 19
    assert abs(record["params"] - record["params_dense"]) / record["params_dense"] < 0.05
    assert record["train_seconds"] > 0 and len(record["history"]) == 1
    assert 0.0 <= record["test_error"] <= 1.0 and 0.0 <= record["val_error"] <= 1.0
    assert record["entropy"]["n_images"] == 96  # statistics of the training split
    assert shaped.netrazor_spec == record["spec"]
    # the default rule reads the data: the bound is the rule's, not a constant
    _, rec2 = EbcleMethod(train=False).run(model, adapter)
    assert "train_seconds" not in rec2 and rec2["bound"] >= 1
    # round_to reaches shape(): the shaped spec carries channel multiples of 8
    _, rec3 = EbcleMethod(rule="fixed", rule_options={"depth": 7}, round_to=8, train=False).run(model, adapter)
    assert all(c % 8 == 0 for c in rec3["spec"]["kwargs"]["widths"])


def test_run_refuses_non_zoo_models():
    from torch import nn

    data = make_synthetic(n_train=32, n_val=8, n_test=8)
    with pytest.raises(ModelError):
        EbcleMethod(train=False).run(nn.Linear(3, 3), Adapter(data=data, train_config=TrainConfig(epochs=1)))


def test_depth_bound_command(tmp_path, capsys):
    assert main(["depth-bound", "--data", "synthetic", "--model", "resnet20", "--rule", "fixed", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["bound"] == 8 and rep["shape"]["layers"] <= 8 < rep["shape"]["layers_original"]
    assert rep["entropy"]["n_images"] > 0
    model = build_model("resnet20", num_classes=4, in_channels=1, input_size=16)
    save_model(model, tmp_path / "r20")
    assert main(["depth-bound", "--data", "synthetic", "--model", "resnet20", "--probe", str(tmp_path / "r20")]) == 0
    out = capsys.readouterr().out
    assert "identity probe" in out and "layer3.2" in out and "effective depth" in out and "conv layers" in out
    assert main(["depth-bound", "--data", "synthetic", "--rule", "nope"]) == 2
    assert "unknown depth rule" in capsys.readouterr().err


def test_recipe_validator_accepts_ebcle_knobs_and_names_bad_ones():
    from netrazor.errors import RecipeError
    from netrazor.pipeline.recipe import parse_recipe

    base = "name: t\ndata: {name: synthetic}\nmodel: {name: resnet20}\nstages:\n"
    parse_recipe(base + "  - ebcle: {keep: flops, rule_options: {k: 6.0}, epochs: 1}\n")
    with pytest.raises(RecipeError, match="kep"):
        parse_recipe(base + "  - ebcle: {kep: flops}\n")
    with pytest.raises(RecipeError, match="keep"):
        parse_recipe(base + "  - ebcle: {keep: bytes}\n")
