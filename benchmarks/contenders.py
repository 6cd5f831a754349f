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


def torch_pruning_run(
    model: nn.Module,
    adapter: Adapter,
    *,
    importance: str = "magnitude",
    target_macs: int,
    steps: int = 8,
    finetune_epochs: int = 4,
) -> tuple[nn.Module, dict]:
    """Torch-Pruning MetaPruner, global channel pruning in ``steps`` until MACs <= ``target_macs``.

    The fine-tune budget (``finetune_epochs`` in total) is split evenly between steps, as in the
    library's iterative examples; the same total budget is given to netrazor's methods.
    """
    import torch_pruning as tp

    model = copy.deepcopy(model)
    example = adapter.example_input(2)
    imp = tp.importance.GroupMagnitudeImportance(p=2) if importance == "magnitude" else tp.importance.GroupTaylorImportance()
    macs0 = count_macs(model, adapter.input_shape)
    ratio_needed = max(0.0, 1.0 - (target_macs / macs0) ** 0.5)  # MACs scale ~ width² for convnets
    pruner = tp.pruner.MetaPruner(
        model, example, importance=imp, global_pruning=True, pruning_ratio=min(0.95, ratio_needed * 1.3 + 0.02),
        iterative_steps=steps, ignored_layers=[_classifier(model)],
    )
    epochs_per_step = max(1, finetune_epochs // steps) if finetune_epochs else 0
    trained_epochs = 0
    history = []
    for step in range(steps):
        if importance == "taylor":
            model.zero_grad()
            x, y = _grad_batch(adapter)
            nn.functional.cross_entropy(model(x), y).backward()
        pruner.step()
        macs = count_macs(model, adapter.input_shape)
        history.append({"step": step, "macs": macs})
        if epochs_per_step and trained_epochs < finetune_epochs:
            adapter.train(model, epochs=epochs_per_step)
            trained_epochs += epochs_per_step
        if macs <= target_macs:
            break
    if trained_epochs < finetune_epochs:
        adapter.train(model, epochs=finetune_epochs - trained_epochs)
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
