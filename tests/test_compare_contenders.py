"""benchmarks.contenders: Torch-Pruning lands at the reference MACs (the issue compares at equal MACs ±5 %)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("torch_pruning")

from benchmarks.contenders import fill_to_macs, ratio_for_macs, torch_pruning_run  # noqa: E402
from netrazor.data import make_synthetic  # noqa: E402
from netrazor.measure import count_macs  # noqa: E402
from netrazor.methods.base import Adapter  # noqa: E402
from netrazor.models import build_model  # noqa: E402
from netrazor.train import TrainConfig  # noqa: E402

SHAPE = (1, 28, 28)


@pytest.fixture(scope="module")
def adapter():
    data = make_synthetic(n_train=128, n_val=32, n_test=32, num_classes=10, shape=SHAPE, seed=0)
    return Adapter(data=data, train_config=TrainConfig(epochs=1, batch_size=64, lr=0.01))


def _lenet5(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("lenet5", num_classes=10, in_channels=1, input_size=28)


def _widths(model: nn.Module) -> list[int]:
    return [m.out_features if isinstance(m, nn.Linear) else m.out_channels
            for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_bisection_brackets_the_target_and_cannot_reach_deep_targets_in_one_shot(adapter):
    from benchmarks.contenders import _pruned_macs

    model = _lenet5()
    lo, hi = ratio_for_macs(model, adapter, "magnitude", 800_000)
    assert lo < hi
    assert _pruned_macs(model, adapter, "magnitude", lo) > 800_000 >= _pruned_macs(model, adapter, "magnitude", hi)
    # At 150k MACs even the largest ratio leaves more (global ranking takes cheap fc1 neurons first):
    # without fill_to_macs a one-step run would miss the target by a factor of several.
    lo, hi = ratio_for_macs(model, adapter, "magnitude", 150_000)
    assert _pruned_macs(model, adapter, "magnitude", hi) > 1.5 * 150_000


@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_torch_pruning_lands_at_the_target_macs(adapter, importance):
    dense = _lenet5()
    target = 150_000
    model, rec = torch_pruning_run(dense, adapter, importance=importance, target_macs=target, finetune_epochs=0)
    reached = count_macs(model, SHAPE)
    assert rec["reached_macs"] == reached and rec["target_macs"] == target
    # Aimed within 2 %; an untrained net's Taylor scores can leave only expensive channels: the 5 % band.
    assert abs(reached / target - 1) <= (0.02 if importance == "magnitude" else 0.05), rec["steps"]
    assert rec["macs_off"] == pytest.approx(reached / target - 1)
    assert count_macs(dense, SHAPE) == 2_293_000  # the dense model is not touched
    assert _widths(model)[-1] == 10  # the classifier keeps its classes
    assert model(torch.zeros(2, *SHAPE)).shape == (2, 10)


def test_fill_to_macs_keeps_ranking_order_and_a_channel_per_layer(adapter):
    model = _lenet5(1)
    start = count_macs(model, SHAPE)
    target = int(start * 0.3)
    info = fill_to_macs(model, adapter, "magnitude", target, tolerance=0.02, rounds=6)
    assert info["macs"] == count_macs(model, SHAPE)
    assert abs(info["macs"] / target - 1) <= 0.02
    assert info["filled_channels"] > 0
    assert all(w >= 1 for w in _widths(model))
    # Already at/below the band's top: nothing to do.
    again = fill_to_macs(model, adapter, "magnitude", info["macs"], tolerance=0.02)
    assert again["filled_channels"] == 0 and again["macs"] == info["macs"]
