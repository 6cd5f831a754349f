"""The memory-budget switch: estimates, the choice, and a DE run that searches with workers when the
batched evaluator is estimated over the budget (same masks as the default evaluator)."""

import copy

import pytest
import torch
from torch import nn

from netrazor.methods.evolution import EvolutionMethod
from netrazor.methods.evolution.memory import activation_elements_per_example, choose_evaluator, step_bytes
from netrazor.methods.masks import prunable_layers
from test_evolution_support import TinyCNN, trained_teacher


def test_activation_elements_count_leaf_outputs_and_input():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert activation_elements_per_example(model, torch.randn(5, 4)) == 4 + 3 + 3 + 2


def test_step_bytes_order_and_choice():
    model, x = TinyCNN().eval(), torch.randn(32, 1, 16, 16)
    looped = step_bytes("looped", model, "conv", x)
    assert step_bytes("workers", model, "conv", x, workers=3) == 4 * looped  # parent + 3 processes
    delta = step_bytes("delta", model, "conv", x)
    assert delta > step_bytes("delta", model, "conv", x[:8]) > looped  # grows with the batch; caps on top
    assert choose_evaluator("delta", model, "conv", x, None) == ("delta", None, None)
    assert choose_evaluator("delta", model, "conv", x, 10 * delta)[0] == "delta"
    kind, need, why = choose_evaluator("delta", model, "conv", x, delta / 2)
    assert (kind, need) == ("workers", delta) and "MiB" in why and "conv" in why
    assert choose_evaluator("looped", model, "conv", x, 1.0) == ("looped", None, None)


FAST = dict(targets=0.3, cycles=1, population=6, elite=2, generations=2, candidate_size=0.1, eval_size=48,
            finetune_epochs=0, seed=0)


def test_de_switches_to_workers_over_the_budget_with_the_same_masks():
    model, adapter = trained_teacher()
    student, rec = EvolutionMethod(**FAST).run(copy.deepcopy(model), adapter)
    small, rec_small = EvolutionMethod(memory_budget_mb=0.01, workers=2, **FAST).run(copy.deepcopy(model), adapter)
    assert {v["evaluator"] for v in rec["layers"].values()} == {"delta"}
    assert all(v["evaluator_switch"] is None for v in rec["layers"].values())
    assert {v["evaluator"] for v in rec_small["layers"].values()} == {"workers"}
    assert all("budget" in v["evaluator_switch"] for v in rec_small["layers"].values())
    for n, m in prunable_layers(student).items():
        assert torch.equal(m.weight != 0, prunable_layers(small)[n].weight != 0), n


def test_memory_budget_knob_is_validated():
    with pytest.raises(ValueError, match="memory_budget_mb"):
        EvolutionMethod(memory_budget_mb=0)
