"""The documented default recipe reaches its target (slow: a real MNIST training run).

Skipped when MNIST is not on this machine yet (`netrazor data fetch mnist`)."""

from __future__ import annotations

import pytest
import torch

from netrazor.errors import DataError
from netrazor.train import Trainer, default_config, seed_everything


@pytest.mark.slow
def test_lenet300_default_recipe_reaches_98_percent_on_mnist():
    from netrazor.data import load_data
    from netrazor.measure import evaluate
    from netrazor.models import build_model

    try:
        data = load_data("mnist", fetch=False)
    except DataError as exc:
        pytest.skip(f"MNIST not available: {exc}")
    seed_everything(0)
    model = build_model("lenet300", num_classes=data.num_classes)
    history = Trainer(model, data, default_config("lenet300", "mnist")).fit()
    assert history[-1]["val_acc"] >= 0.975  # selection signal on val
    assert evaluate(model, data.test, data.mean, data.std)["accuracy"] >= 0.98  # the target
    assert torch.isfinite(torch.tensor([h["train_loss"] for h in history])).all()
