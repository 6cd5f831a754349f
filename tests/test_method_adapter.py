"""netrazor.methods.base.Adapter.train: a method's shorter run under the user's recipe stays a valid config."""

from __future__ import annotations

import pytest
from torch import nn

import netrazor.train as train_module
from netrazor.data import make_synthetic
from netrazor.methods.base import Adapter
from netrazor.train import TrainConfig


@pytest.fixture
def seen_configs(monkeypatch):
    """Trainer replaced by a stub that records the config it was given."""
    configs = []

    class StubTrainer:
        def __init__(self, model, data, config, **kwargs):
            configs.append(config)

        def fit(self, resume=False):
            return []

    monkeypatch.setattr(train_module, "Trainer", StubTrainer)
    return configs


def _adapter() -> Adapter:
    data = make_synthetic(n_train=32, n_val=16, n_test=16, num_classes=4, shape=(1, 8, 8), seed=0)
    return Adapter(data=data, train_config=TrainConfig(epochs=10, warmup_epochs=1, schedule="cosine", lr=0.1))


def test_a_run_no_longer_than_the_warmup_trains_without_one(seen_configs):
    """A 1-epoch fine-tune under a recipe with a 1-epoch warm-up (the CIFAR recipes) used to raise ConfigError."""
    adapter = _adapter()
    adapter.train(nn.Linear(64, 4), epochs=1)
    adapter.train(nn.Linear(64, 4), epochs=2)
    adapter.train(nn.Linear(64, 4), epochs=1, warmup_epochs=0)
    assert [(c.epochs, c.warmup_epochs) for c in seen_configs] == [(1, 0), (2, 1), (1, 0)]
    assert adapter.train_config.warmup_epochs == 1  # the recipe itself is untouched
