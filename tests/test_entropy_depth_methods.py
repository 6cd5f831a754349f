"""NEPENTHE / EASIER / Layer Folding end to end on a tiny synthetic task (real Trainer, real surgery)."""

from __future__ import annotations

import importlib

import copy
import json

import pytest
import torch
from torch import nn

from netrazor.data import make_synthetic
from netrazor.errors import ConfigError
from netrazor.methods.base import Adapter
from netrazor.methods.entropy_depth import (
    METHODS,
    EasierMethod,
    LayerFoldingMethod,
    NepentheMethod,
    SlopeActivation,
    linearity_penalty,
    rectifier_entropy,
)
from netrazor.methods.entropy_depth.layer_folding import SlopePenalty

train = importlib.import_module("netrazor.train")
surgery = importlib.import_module("netrazor.surgery.folding")

FAST = dict(measure_latency=False, retrain_epochs=1, finish_samples=256)


def bundle():
    return make_synthetic(n_train=256, n_val=128, n_test=128, num_classes=4, shape=(1, 8, 8), seed=0)


def adapter(data, epochs=2, lr=0.05):
    cfg = train.TrainConfig(epochs=epochs, batch_size=64, lr=lr, optimizer="sgd", schedule="constant", seed=0)
    return Adapter(data=data, train_config=cfg)


def mlp(bias_on=0.0):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 48), nn.ReLU(),
        nn.Linear(48, 48), nn.ReLU(),
        nn.Linear(48, 4),
    )
    if bias_on:
        with torch.no_grad():  # the second rectifier's input is always positive: linear on the data
            model[3].weight.mul_(0.01)
            model[3].bias.fill_(bias_on)
    return model


def test_methods_dict_for_the_cli():
    assert METHODS == {"nepenthe": NepentheMethod, "easier": EasierMethod, "layer-folding": LayerFoldingMethod}


def test_nepenthe_linearises_a_zero_entropy_layer_and_surgery_folds_it_away():
    data = bundle()
    ad = adapter(data)
    model = mlp(bias_on=5.0)
    ad.train(model, epochs=2)
    assert rectifier_entropy(model, data)["4"].is_linear
    out, rec = NepentheMethod(delta=0.5, rounds=2, **FAST).run(model, ad)
    assert "4" in rec["linearised"]
    assert rec["layers_dense"] == 2 and rec["layers"] < 2
    # the linearised model's Linear->Identity->Linear became one Linear: fewer weighted layers
    assert sum(isinstance(m, nn.Linear) for m in out.modules()) < 3
    assert rec["surgery"]["fold_max_abs_diff"] < 1e-4
    assert rec["params"] < rec["params_dense"] and rec["macs"] < rec["macs_dense"]
    assert rec["rounds"][0]["linearised"] == ["4"]
    assert set(rec["rounds"][0]["entropy"]) == {"2", "4"}
    json.dumps(rec)  # the record is JSON as it is


def test_nepenthe_prunes_by_budget_and_stops_within_delta():
    data = bundle()
    ad = adapter(data)
    model = mlp()
    ad.train(model, epochs=3)
    dense_acc = ad.evaluate(model)["accuracy"]
    out, rec = NepentheMethod(delta=0.05, rounds=3, zeta=0.5, **FAST).run(model, ad)
    accepted = [r for r in rec["rounds"] if r["accepted"]]
    for r in accepted:
        assert r["val_accuracy"] >= dense_acc - 0.05
    if accepted:  # half of the alive prunable weights go each accepted round
        assert accepted[0]["density"] == pytest.approx(0.5, abs=0.01)
        assert sum(accepted[0]["pruned"].values()) == round(0.5 * (64 * 48 + 48 * 48))
    assert rec["val_accuracy"] >= dense_acc - 0.05 - 1e-9 or rec["linearised"]  # final linearisation re-checked on val


def test_failed_round_is_rolled_back_to_the_last_model_within_delta():
    data = bundle()

    class Wrecker(Adapter):
        """Retraining that destroys the model: every round must be rejected."""

        def train(self, model, epochs=None, callbacks=(), **kw):
            with torch.no_grad():
                for p in model.parameters():
                    p.normal_()
            return []

    good = adapter(data)
    model = mlp()
    good.train(model, epochs=3)
    ad = Wrecker(data=data, train_config=good.train_config)
    dense = ad.evaluate(model)["accuracy"]
    reference = copy.deepcopy(model)
    knobs = dict(delta=0.01, rounds=3, fold=False, remove_dead=False, **FAST)
    out, rec = NepentheMethod(backtrack=0, **knobs).run(copy.deepcopy(model), ad)
    assert rec["rounds"][0]["accepted"] is False and len(rec["rounds"]) == 1  # the paper's plain stop
    assert rec["val_accuracy"] == pytest.approx(dense)
    x = ad.example_input(8)
    assert torch.allclose(out(x), reference.eval()(x))
    # with backtracking every failed round is retried from the same model at half the zeta, and
    # the retries count as rounds; all fail here, so the dense model comes back unchanged
    out, rec = NepentheMethod(backtrack=5, zeta=0.5, **knobs).run(copy.deepcopy(model), ad)
    assert [r["accepted"] for r in rec["rounds"]] == [False, False, False]
    assert [r["zeta"] for r in rec["rounds"]] == [0.5, 0.25, 0.125]
    alive = 64 * 48 + 48 * 48
    assert [sum(r["pruned"].values()) for r in rec["rounds"]] == [round(z * alive) for z in (0.5, 0.25, 0.125)]
    assert torch.allclose(out(x), reference.eval()(x))


def test_backtracking_retries_a_failed_round_with_half_the_zeta_and_keeps_it():
    data = bundle()

    class WreckOnce(Adapter):
        """The first retraining destroys the model, later ones do nothing."""

        calls = 0

        def train(self, model, epochs=None, callbacks=(), **kw):
            WreckOnce.calls += 1
            if WreckOnce.calls == 1:
                with torch.no_grad():
                    for p in model.parameters():
                        p.zero_()
            return []

    good = adapter(data)
    model = mlp()
    good.train(model, epochs=3)
    ad = WreckOnce(data=data, train_config=good.train_config)
    out, rec = NepentheMethod(delta=0.3, rounds=2, zeta=0.2, backtrack=1, fold=False, remove_dead=False, **FAST).run(model, ad)
    first, retry = rec["rounds"]
    assert first["accepted"] is False and first["backtrack"] == {"next_zeta": 0.1}
    assert retry["accepted"] is True and retry["zeta"] == 0.1
    alive = 64 * 48 + 48 * 48
    # the retry pruned the dense model (the wrecked one was thrown away): density 0.9, not 0.72
    assert retry["density"] == pytest.approx(0.9, abs=1e-3)
    assert rec["density"] == pytest.approx(0.9, abs=1e-3)
    assert sum(retry["pruned"].values()) == round(0.1 * alive)


def _trained_mlp():
    """A 2-epoch MLP, its adapter and its rectifier entropies (what the EASIER tests start from)."""
    data = bundle()
    ad = adapter(data)
    model = mlp()
    ad.train(model, epochs=2)
    return model, ad, rectifier_entropy(model, data)


def test_easier_linearises_the_lowest_entropy_rectifier_each_round():
    model, ad, ent = _trained_mlp()
    lowest = min(ent, key=lambda n: ent[n].entropy)
    out, rec = EasierMethod(delta=1.0, rounds=1, **FAST).run(model, ad)
    assert rec["rounds"][0]["linearised"] == [lowest]
    assert rec["layers"] == 1
    assert sum(isinstance(m, nn.Linear) for m in out.modules()) == 2  # folded away


def test_easier_linearises_only_its_candidates_and_names_an_unknown_one():
    model, ad, ent = _trained_mlp()
    highest = max(ent, key=lambda n: ent[n].entropy)  # never EASIER's own first pick
    assert highest != min(ent, key=lambda n: ent[n].entropy)
    _, rec = EasierMethod(delta=1.0, rounds=1, candidates=[highest], **FAST).run(copy.deepcopy(model), ad)
    assert rec["rounds"][0]["linearised"] == [highest]
    with pytest.raises(ConfigError, match="unknown rectifiers.*'nope'"):
        EasierMethod(delta=1.0, rounds=1, candidates=["nope"], **FAST).run(copy.deepcopy(model), ad)
    with pytest.raises(ConfigError, match="candidates"):
        EasierMethod(candidates=[highest], residual="drop", **FAST).run(copy.deepcopy(model), ad)


def test_layer_folding_penalty_pushes_alpha_to_one():
    data = bundle()
    ad = adapter(data, epochs=3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), SlopeActivation(0.2), nn.Linear(32, 4))
    before = float(linearity_penalty(model).detach())
    ad.train(model, epochs=3, callbacks=[SlopePenalty(5.0)])
    alpha = float(model[2].alpha.detach())
    assert alpha > 0.9
    assert alpha <= 1.0  # projected onto [0, 1]
    assert float(linearity_penalty(model).detach()) < before


def test_layer_folding_method_folds_high_alpha_layers():
    data = bundle()
    ad = adapter(data, epochs=2)
    model = mlp()
    ad.train(model, epochs=2)
    out, rec = LayerFoldingMethod(penalty=5.0, alpha_init=0.2, train_epochs=3, delta=1.0, **FAST).run(model, ad)
    assert rec["linearised"], rec["alpha"]
    assert all(rec["alpha"][n] >= 0.9 for n in rec["linearised"])
    assert rec["layers"] == 2 - len(rec["linearised"])
    assert not any(isinstance(m, SlopeActivation) for m in out.modules())
    assert sum(isinstance(m, nn.Linear) for m in out.modules()) < 3


def test_latency_is_timed_for_dense_dense_folded_and_result():
    data = bundle()
    ad = adapter(data)
    model = mlp(bias_on=5.0)
    ad.train(model, epochs=1)
    knobs = dict(FAST, measure_latency=True, latency_repeats=3)
    _, rec = NepentheMethod(delta=1.0, rounds=1, **knobs).run(model, ad)
    for key in ("latency_ms_b1", "latency_ms_b1_dense", "latency_ms_b64", "latency_ms_b64_dense"):
        assert rec[key] > 0
    assert set(rec["latency_dense_folded"]) == {"latency_ms_b1_dense_folded", "latency_ms_b64_dense_folded"}


@pytest.mark.parametrize("cls,knobs", [
    (NepentheMethod, {"zeta": 1.5}),
    (NepentheMethod, {"temperature": 0.0}),
    (NepentheMethod, {"layer_cap": 0.0}),
    (NepentheMethod, {"backtrack": -1}),
    (NepentheMethod, {"delta": -0.1}),
    (EasierMethod, {"entropy_split": "holdout"}),
    (LayerFoldingMethod, {"threshold": 0.0}),
    (LayerFoldingMethod, {"alpha_init": -1.0}),
])
def test_bad_knobs_are_refused_at_construction(cls, knobs):
    from netrazor.errors import ConfigError

    with pytest.raises(ConfigError):
        cls(**knobs)
    with pytest.raises(ValueError):  # what the recipe validator catches
        cls(**knobs)


@pytest.mark.parametrize("act", [nn.ReLU(), nn.LeakyReLU(0.2), nn.PReLU(3, init=0.3)])
def test_linearising_a_zero_entropy_layer_is_exact_on_its_data(act):
    from netrazor.methods.entropy_depth import linearise

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), act, nn.Linear(3, 2)).eval()
    with torch.no_grad():  # channel 0 always on, channels 1-2 always off on this data
        model[1].bias.copy_(torch.tensor([50.0, -50.0, -60.0]))
    x = torch.randn(64, 4)
    ent = rectifier_entropy(model, [x])["2"]
    assert ent.is_linear and ent.always_off.tolist() == [False, True, True]
    before = model(x)
    from netrazor.methods.entropy_depth.graph import link_rectifiers

    inexact = linearise(model, "2", ent, link_rectifiers(model).producer["2"])
    assert inexact == 0 and isinstance(model[2], nn.Identity)
    assert torch.allclose(model(x), before, atol=1e-4)


def test_an_emptied_layer_becomes_linear_next_round_and_surgery_removes_it():
    # zeta = 0.5 on three hidden layers: the softmax share of the most irrelevant layer exceeds its
    # weights, it is emptied (capping), its rectifier sees a constant input (H = 0) next round and
    # is linearised; surgery then removes the constant units and folds the linear run.
    data = bundle()
    ad = adapter(data)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    ad.train(model, epochs=3)
    out, rec = NepentheMethod(delta=1.0, rounds=3, zeta=0.5, **FAST).run(model, ad)
    total: dict[str, int] = {}
    for rnd in rec["rounds"]:
        for r, n in rnd["pruned"].items():
            total[r] = total.get(r, 0) + n
    emptied = [r for r, n in total.items() if n == 64 * 64]
    assert emptied  # the cap emptied a layer ...
    assert set(emptied) <= set(rec["linearised"])  # ... which was linearised afterwards
    assert rec["layers"] < rec["layers_dense"]
    assert rec["params"] < rec["params_dense"] and rec["macs"] < rec["macs_dense"]
    assert rec["surgery"]["constant_channels_max_abs_diff"] < 1e-5
    assert rec["surgery"]["fold_max_abs_diff"] < 1e-5


def test_layer_folding_guard_folds_by_decreasing_alpha_while_within_delta():
    data = bundle()

    class CountingAdapter(Adapter):
        """Validation accuracy falls 0.1 per folded (Identity) rectifier: the guard must stop at one."""

        def evaluate(self, model, split="val"):
            acc = 1.0 - 0.1 * sum(isinstance(m, nn.Identity) for m in model.modules())
            return {"accuracy": acc, "error": 1 - acc, "loss": 0.0}

    base = adapter(data)
    ad = CountingAdapter(data=data, train_config=base.train_config)
    model = mlp()
    out, rec = LayerFoldingMethod(penalty=5.0, alpha_init=0.2, train_epochs=3, delta=0.15, **FAST).run(model, ad)
    alphas = rec["alpha"]
    assert all(a >= 0.9 for a in alphas.values())  # both were candidates
    order = sorted(alphas, key=lambda n: -alphas[n])  # decreasing alpha, ties in layer order
    assert rec["linearised"] == order[:1]
    assert rec["rounds"][-1]["refused_by_guard"] == order[1:]
    assert rec["within_delta"] and "fallback" not in rec
    unguarded = LayerFoldingMethod(penalty=5.0, alpha_init=0.2, train_epochs=3, delta=0.15, guard=False, **FAST)
    _, rec2 = unguarded.run(mlp(), ad)
    assert len(rec2["linearised"]) == 2 and not rec2["within_delta"]


def tiny_resnet():
    from netrazor.models import build_model

    torch.manual_seed(0)
    return build_model("resnet20", num_classes=4, in_channels=1, input_size=8, width_mult=0.25)


def test_easier_drop_mode_removes_the_lowest_entropy_branch_and_its_idle_rectifier():
    from netrazor.methods.entropy_depth.easier import residual_branch_of
    data = bundle()
    ad = adapter(data, epochs=1)
    model = tiny_resnet()
    assert residual_branch_of(model, "layer2.1.branch.relu1") == "layer2.1.branch"
    assert residual_branch_of(model, "layer2.1.relu") is None and residual_branch_of(model, "stem.relu") is None
    no_shortcut = nn.Module()  # a MobileNetV2-style block without a shortcut: removing its branch would cut the net
    no_shortcut.branch, no_shortcut.shortcut = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU()), None
    assert residual_branch_of(nn.Sequential(no_shortcut), "0.branch.1") is None
    ent = rectifier_entropy(model, data, split="train")
    branch_rects = [n for n in ent if ".branch." in n]
    lowest = min(branch_rects, key=lambda n: (ent[n].entropy, branch_rects.index(n)))
    convs = lambda m: sum(isinstance(x, nn.Conv2d) for x in m.modules())
    convs_before = convs(model)
    out, rec = EasierMethod(delta=1.0, rounds=1, residual="drop", approx_fold="off", **FAST).run(model, ad)
    block = lowest.rsplit(".branch.", 1)[0]
    assert rec["dropped_branches"] == [f"{block}.branch"]
    # surgery hands back a traced module; the branch's two convs are gone from it
    projection = not isinstance(model.get_submodule(f"{block}.shortcut"), nn.Identity)
    assert convs(out) == convs_before - 2
    # the branch's ReLU left with it; an identity-shortcut block's output ReLU became the identity
    assert len(rec["rectifiers_after"]) == len(rec["rectifiers_before"]) - (1 if projection else 2)
    assert rec["rounds"][0]["because_of"] == lowest and rec["rounds"][0]["accepted"]


def test_easier_drop_mode_keeps_a_branch_whose_removal_breaks_delta_and_tries_the_next(monkeypatch):
    data = bundle()
    ad = adapter(data, epochs=1)
    method = EasierMethod(delta=0.05, rounds=2, residual="drop", approx_fold="off", **FAST)
    real_evaluate = method.evaluate
    calls = []

    def evaluate(model, adapter_):  # the first round's drop "costs" all accuracy
        calls.append(1)
        out = real_evaluate(model, adapter_)
        return {**out, "val_accuracy": 0.0} if len(calls) == 2 else out

    monkeypatch.setattr(method, "evaluate", evaluate)
    passes = []
    real_measure = method.measure_entropy
    monkeypatch.setattr(method, "measure_entropy", lambda *a: (passes.append(1), real_measure(*a))[1])
    out, rec = method.run(tiny_resnet(), ad)
    first, second = rec["rounds"]
    assert first["entropy"] == second["entropy"]  # the rolled-back model is the one measured before
    assert len(passes) == 2  # once for both rounds, once for the final record
    assert not first["accepted"] and second["dropped"] != first["dropped"]
    assert first["dropped"] not in rec["dropped_branches"] and rec["dropped_branches"] == [second["dropped"]]
    assert len(rec["rectifiers_after"]) < len(rec["rectifiers_before"])  # the second drop stayed


def test_easier_refuses_an_unknown_residual_mode():
    with pytest.raises(ValueError, match="residual"):
        EasierMethod(residual="fold")
