"""Regression: DE's default fine-tune must not wreck a trained model (it once ran KD at the recipe lr)."""

import copy

import torch
from torch import nn

from netrazor.data import make_synthetic
from netrazor.methods.base import Adapter
from netrazor.methods.evolution import EvolutionMethod
from netrazor.train import TrainConfig


def _model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 4))


def test_default_finetune_lr_is_a_fraction_of_the_recipe_lr_and_keeps_accuracy():
    data = make_synthetic(n_train=600, n_val=200, n_test=200)
    # An aggressive from-scratch lr: fine for training, ruinous for a T²-scaled KD fine-tune.
    config = TrainConfig(epochs=4, batch_size=32, lr=0.5, momentum=0.9, nesterov=True, weight_decay=0.0)
    adapter = Adapter(data=data, train_config=config)
    torch.manual_seed(0)
    model = _model()
    adapter.train(model)
    before = adapter.evaluate(model, "val")["accuracy"]
    assert before > 0.9

    method = EvolutionMethod(targets=0.5, cycles=1, finetune_epochs=1, population=8, elite=2, generations=2)
    assert method._finetune_lr(adapter) == 0.2 * config.lr
    student, _ = method.run(copy.deepcopy(model), adapter)
    after = adapter.evaluate(student, "val")["accuracy"]
    assert after >= before - 0.05, f"fine-tune lost accuracy: {before:.3f} -> {after:.3f}"
