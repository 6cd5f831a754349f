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

    return tp.pruner.MetaPruner(
        model, adapter.example_input(2), importance=_importance(importance), global_pruning=True, pruning_ratio=ratio,
        iterative_steps=steps, ignored_layers=[_classifier(model)],
    )


def _step(model: nn.Module, pruner, adapter: Adapter, importance: str) -> None:
    if importance == "taylor":  # first-order Taylor needs gradients of the loss
        model.zero_grad()
        x, y = _grad_batch(adapter)
        nn.functional.cross_entropy(model(x), y).backward()
    pruner.step()


def ratio_for_macs(model: nn.Module, adapter: Adapter, importance: str, target_macs: int,
                   iterations: int = 12) -> tuple[float, float]:
    """Bisect Torch-Pruning's global channel ratio around ``target_macs`` for one-shot pruning of ``model``.

    Returns ``(lo, hi)``: pruning at ``lo`` leaves MACs above the target, at ``hi`` at or below it.
    MACs are a step function of the ratio (whole channels go), so the two can sit far apart when the
    next channel in the ranking is an expensive one — :func:`fill_to_macs` closes that gap.
    """
    lo, hi = 0.0, 0.95
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if _pruned_macs(model, adapter, importance, mid) > target_macs:
            lo = mid
        else:
            hi = mid
    return lo, hi


def _pruned_macs(model: nn.Module, adapter: Adapter, importance: str, ratio: float) -> int:
    trial = copy.deepcopy(model)
    if ratio > 0:
        _step(trial, _pruner(trial, adapter, importance, ratio, 1), adapter, importance)
    return count_macs(trial, adapter.input_shape)


def _importance(importance: str):
    import torch_pruning as tp

    return tp.importance.GroupMagnitudeImportance(p=2) if importance == "magnitude" else tp.importance.GroupTaylorImportance()


def _channel_costs(model: nn.Module, adapter: Adapter, groups: list) -> list[int]:
    """MACs one channel of each group removes, measured by pruning it from a copy (exact for one channel)."""
    import torch_pruning as tp

    names = {module: name for name, module in model.named_modules()}
    macs = count_macs(model, adapter.input_shape)
    costs = []
    for group in groups:
        root = group[0].dep
        if len(group[0].idxs) < 2:  # a last channel is never removed: no cost to measure
            costs.append(0)
            continue
        trial = copy.deepcopy(model)
        graph = tp.DependencyGraph().build_dependency(trial, example_inputs=adapter.example_input(2))
        module = trial.get_submodule(names[root.target.module])
        graph.get_pruning_group(module, root.handler, idxs=[0]).prune()
        costs.append(macs - count_macs(trial, adapter.input_shape))
    return costs


def fill_to_macs(model: nn.Module, adapter: Adapter, importance: str, target_macs: int, *,
                 tolerance: float = 0.05, rounds: int = 4) -> dict:
    """Prune ``model`` in place from just above ``target_macs`` to within ``tolerance`` of it.

    Our reconstruction [REC], not a Torch-Pruning feature: the channels are taken in the order of the
    same global ranking Torch-Pruning uses (its group importance, mean-normalised per group), but a
    channel whose removal would overshoot below ``target_macs * (1 - tolerance)`` is skipped, so a
    cheaper, slightly more important one (e.g. an fc neuron instead of a conv channel) closes the gap.
    Costs per channel are measured on copies and re-measured each round (they shrink as neighbours go).
    Knobs: ``tolerance`` (the issue's ±5 %), ``rounds``. Returns what it removed and the MACs reached.
    """
    import torch_pruning as tp

    removed = 0
    for _ in range(rounds):
        macs = count_macs(model, adapter.input_shape)
        if macs <= target_macs * (1 + tolerance):
            break
        if importance == "taylor":  # Taylor scores read the loss gradient of the current model
            model.zero_grad()
            x, y = _grad_batch(adapter)
            nn.functional.cross_entropy(model(x), y).backward()
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=adapter.example_input(2))
        groups = list(graph.get_all_groups(ignored_layers=[_classifier(model)], root_module_types=(nn.Conv2d, nn.Linear)))
        costs = _channel_costs(model, adapter, groups)
        scorer = _importance(importance)
        ranked, sizes = [], {}
        for g, group in enumerate(groups):
            scores = scorer(group)
            if scores is None or len(scores) < 2:
                continue
            sizes[g] = len(scores)
            ranked += [(float(s), g, c) for c, s in enumerate(scores.detach().cpu())]
        ranked.sort()
        # Aim at the target itself; never drop below its lower tolerance; keep >= 1 channel per group.
        budget, floor = macs - target_macs, macs - target_macs * (1 - tolerance)
        chosen: dict[int, list[int]] = {}
        spent = 0
        for _score, g, c in ranked:
            if spent >= budget:
                break
            left = sizes[g] - len(chosen.get(g, []))
            if spent + costs[g] <= floor and left > 1:
                chosen.setdefault(g, []).append(c)
                spent += costs[g]
        if not chosen:
            break
        for g, idxs in chosen.items():
            root = groups[g][0].dep
            graph.get_pruning_group(root.target.module, root.handler, idxs=idxs).prune()
            removed += len(idxs)
    model.zero_grad(set_to_none=True)
    return {"filled_channels": removed, "macs": count_macs(model, adapter.input_shape)}


def torch_pruning_run(
    model: nn.Module,
    adapter: Adapter,
    *,
    importance: str = "magnitude",
    target_macs: int,
    finetune_epochs: int = 4,
    landing: float = 0.02,
    band: float = 0.05,
) -> tuple[nn.Module, dict]:
    """Torch-Pruning MetaPruner, global channel pruning down to ``target_macs`` in ``finetune_epochs`` steps.

    Step i prunes the current model to the i-th point of a geometric MACs schedule from dense to the
    target (ratio found by bisection on measured MACs, because importance rankings change as the model
    fine-tunes), then fine-tunes one epoch — the same total fine-tuning budget netrazor's methods get.
    The last step aims within ``landing`` (default 2 %) of the target, well inside the issue's equal-MACs
    band (``band``, ±5 %): when no ratio lands there (the next ranked channel is an expensive one), it
    prunes at the ratio just above the target and :func:`fill_to_macs` takes the remaining channels in
    ranking order (within ``band`` when only channels too expensive for ``landing`` are left).
    The record says where it landed: ``target_macs``, ``reached_macs``, ``macs_off`` (reached / target - 1).
    """
    model = copy.deepcopy(model)
    steps = max(1, finetune_epochs)
    macs0 = count_macs(model, adapter.input_shape)
    history = []
    for step in range(1, steps + 1):
        goal = int(macs0 * (target_macs / macs0) ** (step / steps))
        lo, hi = ratio_for_macs(model, adapter, importance, goal)
        entry = {"step": step, "goal_macs": goal, "ratio": hi}
        last = step == steps
        if last and abs(_pruned_macs(model, adapter, importance, hi) / goal - 1) > landing:
            entry["ratio"] = lo
        if entry["ratio"] > 0:
            _step(model, _pruner(model, adapter, importance, entry["ratio"], 1), adapter, importance)
        if last and count_macs(model, adapter.input_shape) > goal * (1 + landing):
            entry.update(fill_to_macs(model, adapter, importance, goal, tolerance=landing))
            if entry["macs"] > goal * (1 + landing):  # only expensive channels left: use the whole band
                filled = entry["filled_channels"]
                entry.update(fill_to_macs(model, adapter, importance, goal, tolerance=band))
                entry["filled_channels"] += filled
        entry["macs"] = count_macs(model, adapter.input_shape)
        history.append(entry)
        model.zero_grad(set_to_none=True)
        if finetune_epochs:
            adapter.train(model, epochs=1)
    reached = history[-1]["macs"]
    return model, {"importance": importance, "steps": history, "finetune_epochs": finetune_epochs,
                   "target_macs": int(target_macs), "reached_macs": int(reached),
                   "macs_off": reached / target_macs - 1, "landing": landing, "band": band}


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
