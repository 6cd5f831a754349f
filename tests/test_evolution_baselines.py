"""Global magnitude baseline, mask keeping through the real Trainer, and method knobs."""

import importlib
import copy

import pytest
import torch
import torch.nn.utils.prune as tprune
from torch import nn

from netrazor.errors import ConfigError
from netrazor.methods.baselines import MagnitudePruning, global_magnitude_masks, global_magnitude_prune
from netrazor.methods.evolution import EvolutionMethod
from netrazor.methods.masks import prunable_layers
from netrazor.methods.evolution.targets import keep_counts
from test_evolution_support import TinyCNN, trained_teacher


def test_global_magnitude_matches_torch_global_unstructured():
    torch.manual_seed(0)
    model = TinyCNN()
    ours = global_magnitude_masks(model, 0.7)
    ref = copy.deepcopy(model)
    params = [(m, "weight") for m in prunable_layers(ref).values()]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=0.7)
    for (name, m) in prunable_layers(ref).items():
        assert torch.equal(ours[name], m.weight_mask.bool()), name
    pruned, masks = global_magnitude_prune(model, 0.7)
    total = sum(m.numel() for m in masks.values())
    assert sum(int((m.weight != 0).sum()) for m in prunable_layers(pruned).values()) == round(0.3 * total)


def test_magnitude_split_rule_equals_global_magnitude_counts():
    torch.manual_seed(0)
    model = TinyCNN()
    counts = keep_counts(prunable_layers(model), 0.3, "magnitude", min_density=0.0)
    masks = global_magnitude_masks(model, 0.7)
    assert counts == {n: int(m.sum()) for n, m in masks.items()}
    # the floor keeps a layer alive and the total budget stays exact
    floored = keep_counts(prunable_layers(model), 0.01, "magnitude", min_density=0.2)
    assert floored["conv"] >= round(0.2 * 54)
    with pytest.raises(ConfigError):
        keep_counts(prunable_layers(model), 0.3, "nope")


def test_finetune_with_real_trainer_keeps_zeros():
    train = importlib.import_module("netrazor.train")
    from netrazor.data import make_synthetic
    from netrazor.methods.base import Adapter

    data = make_synthetic(n_train=256, n_val=64, n_test=64, seed=1)
    adapter = Adapter(data=data, train_config=train.TrainConfig(epochs=1, batch_size=64, lr=0.05, weight_decay=1e-3))
    model = TinyCNN()
    adapter.train(model, epochs=1)
    before = copy.deepcopy(model)
    pruned, rec = MagnitudePruning(sparsity=0.8, finetune_epochs=1).run(model, adapter)
    masks = global_magnitude_masks(before, 0.8)
    for name, m in prunable_layers(pruned).items():
        nz = m.weight != 0
        assert torch.equal(nz, masks[name]), name  # zeros stayed zero, survivors moved off zero
    assert not torch.equal(prunable_layers(pruned)["fc1"].weight, prunable_layers(before)["fc1"].weight * masks["fc1"])
    assert rec["overall_density"] == pytest.approx(0.2, abs=1e-3)
    assert 0.0 <= rec["val_accuracy"] <= 1.0
    # DE through the real Trainer and measure.evaluate, with progress events
    events = []
    student, drec = EvolutionMethod(targets=0.3, cycles=1, population=6, elite=2, generations=2,
                                    eval_size=32, finetune_epochs=1, progress=events.append).run(before, adapter)
    assert {e["event"] for e in events} == {"step", "cycle"}
    layer_bars = [e for e in events if e["event"] == "step"]
    assert all(0 < e["completed"] <= e["total"] for e in layer_bars)
    assert drec["cycles"][0]["finetune_epochs"] == 1 and "val_accuracy" in drec["after"]
    assert drec["overall_density"] == pytest.approx(0.3, abs=1e-3)


def test_tolerance_stops_a_layer_and_hessian_pool_runs():
    model, adapter = trained_teacher()
    student, rec = EvolutionMethod(targets=0.05, tolerance=1e-6, finetune_epochs=0, cycles=2, population=6,
                                   elite=2, generations=2, candidate_size=0.1, eval_size=32).run(model, adapter)
    stopped = [n for n, v in rec["layers"].items() if v["stopped"]]
    assert stopped and all(not rec["layers"][n]["reached"] for n in stopped)
    assert all(s["divergence"] <= 1e-6 for s in rec["steps"] if s["committed"])
    student, rec = EvolutionMethod(targets=0.3, candidate_pool="hessian", finetune_epochs=0, cycles=1,
                                   population=6, elite=2, generations=2, eval_size=32).run(model, adapter)
    assert rec["overall_density"] == pytest.approx(0.3, abs=1e-3)
    with pytest.raises(ConfigError):
        EvolutionMethod(targets=0.3, candidate_pool="nope", finetune_epochs=0).run(model, adapter)


@pytest.mark.parametrize("bad", [dict(targets=1.5), dict(elite=0), dict(split_rule="x"), dict(divergence="x"),
                                 dict(eval_split="test"), dict(temperature=0.0), dict(targets={"fc1": -0.1})])
def test_bad_knobs_raise_config_and_value_error(bad):
    # ConfigError for the CLI, ValueError for the recipe validator (pipeline.stages)
    with pytest.raises(ConfigError):
        EvolutionMethod(**bad)
    with pytest.raises(ValueError):
        EvolutionMethod(**bad)


def test_iterative_magnitude_prune_nests_masks_and_splits_the_epochs():
    from netrazor.methods.baselines import iterative_magnitude_prune

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    calls = []

    class CountingAdapter:  # records each round's epochs and the zeros it trained with
        def train(self, m, epochs, callbacks=(), loss_fn=None, **kw):
            calls.append((epochs, int((m[1].weight == 0).sum())))
            return []

    out, masks = iterative_magnitude_prune(model, 0.9, 3, adapter=CountingAdapter(), finetune_epochs=7)
    assert [e for e, _ in calls] == [3, 2, 2]
    zeros = [z for _, z in calls]
    assert zeros == sorted(zeros) and zeros[0] < zeros[-1]  # each round prunes more, never less
    total = sum(m.weight.numel() for m in (out[1], out[3]))
    kept = sum(int(m.weight.count_nonzero()) for m in (out[1], out[3]))
    assert kept == round(0.1 * total)
    with pytest.raises(ConfigError):
        iterative_magnitude_prune(model, 0.9, 3, adapter=CountingAdapter(), finetune_epochs=2)
