"""Regression: DE's default fine-tune must not wreck a trained model (it once ran KD at the recipe lr)."""

import copy

import pytest
import torch
from torch import nn

from netrazor.data import make_synthetic
from netrazor.methods.base import Adapter
from netrazor.methods.evolution import EvolutionMethod
from netrazor.methods.evolution.distill import ContinuedSchedule
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



class _Recorder:
    """Trainer callback + loss: the learning rate and the labels of every optimizer step."""

    def __init__(self):
        self.lrs, self.labels = [], []

    def on_after_backward(self, trainer):
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])

    def loss(self, model, x, y):
        self.labels.append(y.clone())
        logits = model(x)
        return nn.functional.cross_entropy(logits, y), logits


def test_continued_schedule_slices_replay_one_uninterrupted_run():
    data = make_synthetic(n_train=200, n_val=50, n_test=50)
    adapter = Adapter(data=data, train_config=TrainConfig(epochs=3, batch_size=32, lr=0.1, schedule="cosine"))
    whole, sliced, restarted = _Recorder(), _Recorder(), _Recorder()
    adapter.train(_model(), epochs=3, callbacks=[whole], loss_fn=whole.loss)
    model = _model()
    for start in range(3):
        adapter.train(model, epochs=1, callbacks=[ContinuedSchedule(start, 3), sliced], loss_fn=sliced.loss)
        adapter.train(_model(), epochs=1, callbacks=[restarted], loss_fn=restarted.loss)
    assert sliced.lrs == whole.lrs  # same learning rates step by step ...
    assert all(torch.equal(a, b) for a, b in zip(sliced.labels, whole.labels))  # ... and example order
    assert len(sliced.labels) == len(whole.labels)
    assert restarted.lrs != whole.lrs  # the per-cycle schedule decays to ~0 three times


def test_continued_finetune_schedule_runs_and_is_validated():
    data = make_synthetic(n_train=300, n_val=100, n_test=100)
    adapter = Adapter(data=data, train_config=TrainConfig(epochs=2, batch_size=32, lr=0.1))
    method = EvolutionMethod(targets=0.5, cycles=2, finetune_epochs=1, population=4, elite=1, generations=1,
                             finetune_schedule="continued")
    assert method._continued(2) == ContinuedSchedule(1, 2)
    student, record = method.run(_model(), adapter)
    assert record["finetune_epochs_total"] == 2 and record["knobs"]["finetune_schedule"] == "continued"
    assert abs(record["overall_density"] - 0.5) < 0.01
    with pytest.raises(ValueError, match="finetune_schedule"):
        EvolutionMethod(finetune_schedule="warm")
