"""The tools a user would pick instead of netrazor, run on the same model, data and budget.

- Torch-Pruning (Fang et al., CVPR 2023; github.com/VainF/Torch-Pruning) with magnitude (L2) and
  first-order Taylor group importance, pruned iteratively with fine-tuning between steps until a
  MACs target is met.
- ``torch.nn.utils.prune`` global magnitude (L1, unstructured), fine-tuned with its masks.
- Deep Compression (Han et al., ICLR 2016): iterative magnitude pruning + k-means weight sharing +
  entropy coding — assembled from netrazor's own quantiser and codec (ANS instead of Huffman, which
  is never worse than Huffman on the same symbols).

Each function takes a trained model and a ``netrazor.methods.base.Adapter`` and returns the
compressed model and a small record; the harness measures everything the same way afterwards.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from netrazor.measure import count_macs
from netrazor.methods.base import Adapter

log = logging.getLogger(__name__)


def _classifier(model: nn.Module) -> nn.Module:
    """The last Linear layer: its outputs are the classes and must not be pruned."""
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    return last


def _pruner(model: nn.Module, adapter: Adapter, importance: str, ratio: float, steps: int):
    import torch_pruning as tp

    imp = tp.importance.GroupMagnitudeImportance(p=2) if importance == "magnitude" else tp.importance.GroupTaylorImportance()
    return tp.pruner.MetaPruner(
        model, adapter.example_input(2), importance=imp, global_pruning=True, pruning_ratio=ratio,
        iterative_steps=steps, ignored_layers=[_classifier(model)],
    )


def _step(model: nn.Module, pruner, adapter: Adapter, importance: str) -> None:
    if importance == "taylor":  # first-order Taylor needs gradients of the loss
        model.zero_grad()
        x, y = _grad_batch(adapter)
        nn.functional.cross_entropy(model(x), y).backward()
    pruner.step()


def ratio_for_macs(model: nn.Module, adapter: Adapter, importance: str, target_macs: int, iterations: int = 12) -> float:
    """Bisect the global channel ratio whose one-shot pruning of ``model`` lands at ``target_macs``."""
    lo, hi = 0.0, 0.95
    for _ in range(iterations):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        _step(trial, _pruner(trial, adapter, importance, mid, 1), adapter, importance)
        if count_macs(trial, adapter.input_shape) > target_macs:
            lo = mid
        else:
            hi = mid
    return hi


def torch_pruning_run(
    model: nn.Module,
    adapter: Adapter,
    *,
    importance: str = "magnitude",
    target_macs: int,
    finetune_epochs: int = 4,
) -> tuple[nn.Module, dict]:
    """Torch-Pruning MetaPruner, global channel pruning down to ``target_macs`` in ``finetune_epochs`` steps.

    Step i prunes the current model to the i-th point of a geometric MACs schedule from dense to the
    target (ratio found by bisection, because importance rankings change as the model fine-tunes), then
    fine-tunes one epoch — so the result lands at the target MACs (the issue compares at equal MACs
    ±5 %) with the same total fine-tuning budget netrazor's methods get.
    """
    model = copy.deepcopy(model)
    steps = max(1, finetune_epochs)
    macs0 = count_macs(model, adapter.input_shape)
    history = []
    for step in range(1, steps + 1):
        goal = int(macs0 * (target_macs / macs0) ** (step / steps))
        ratio = ratio_for_macs(model, adapter, importance, goal)
        _step(model, _pruner(model, adapter, importance, ratio, 1), adapter, importance)
        history.append({"step": step, "goal_macs": goal, "ratio": ratio, "macs": count_macs(model, adapter.input_shape)})
        if finetune_epochs:
            adapter.train(model, epochs=1)
    return model, {"importance": importance, "steps": history, "finetune_epochs": finetune_epochs}


def _grad_batch(adapter: Adapter, n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    data = adapter.data
    return data.normalize(data.train.images[:n]), data.train.labels[:n]


def torch_prune_global_magnitude(model: nn.Module, adapter: Adapter, *, sparsity: float, finetune_epochs: int = 4) -> tuple[nn.Module, dict]:
    """``torch.nn.utils.prune.global_unstructured`` (L1) over all Conv/Linear weights, then fine-tune."""
    from torch.nn.utils import prune

    model = copy.deepcopy(model)
    params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    if finetune_epochs:
        adapter.train(model, epochs=finetune_epochs)  # masks stay applied through prune's hooks
    for module, name in params:
        prune.remove(module, name)
    return model, {"sparsity": sparsity, "finetune_epochs": finetune_epochs}
