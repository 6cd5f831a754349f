"""Optimizer construction and the carry-over of optimizer state when a model shrinks.

Parameters are tracked by *name* (``model.named_parameters()``), because surgery replaces a
shrunk layer's ``nn.Parameter`` objects: identity is lost, the name survives.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from netrazor.train.config import TrainConfig

# {param name: [(dim, kept indices), ...]}: how a shrunk parameter was cut from the old one.
IndexMaps = Mapping[str, Sequence[tuple[int, torch.Tensor]]]


def make_optimizer(groups: list[dict], config: TrainConfig) -> torch.optim.Optimizer:
    """Build the optimizer of ``config`` over ``groups``.

    Each group is ``{"params": [...], "lr_scale": float, "weight_decay": float}``; the learning
    rate of a group is ``config.lr * schedule_factor * lr_scale`` and is set by the Trainer every
    step (``lr_scale`` is kept inside the torch param group so it survives a state_dict round trip).
    """
    torch_groups = [
        {"params": list(g["params"]), "lr_scale": float(g.get("lr_scale", 1.0)),
         "weight_decay": float(g.get("weight_decay", config.weight_decay)), "lr": config.lr}
        for g in groups
        if len(g["params"])
    ]
    if not torch_groups:
        from netrazor.errors import TrainingError

        raise TrainingError("the model has no trainable parameters; unfreeze some (requires_grad=True) before training.")
    if config.optimizer == "sgd":
        return torch.optim.SGD(torch_groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    betas = (config.momentum, 0.999)
    if config.optimizer == "adam":
        return torch.optim.Adam(torch_groups, lr=config.lr, betas=betas)
    return torch.optim.AdamW(torch_groups, lr=config.lr, betas=betas)


def ordered_names(optimizer: torch.optim.Optimizer, names: Mapping[int, str]) -> list[str]:
    """Names of the optimizer's parameters in its state_dict order (group by group)."""
    return [names[id(p)] for g in optimizer.param_groups for p in g["params"]]


def carry_state(
    old: torch.optim.Optimizer,
    old_names: Mapping[int, str],
    new: torch.optim.Optimizer,
    new_names: Mapping[int, str],
    index_maps: IndexMaps | None = None,
) -> dict[str, str]:
    """Copy per-parameter state (momentum, Adam moments, step) from ``old`` into ``new``.

    Rule, per parameter name present in both:
      - every state tensor already has the new shape -> copied as is;
      - ``index_maps[name]`` is given -> each state tensor is cut with ``index_select`` along the
        listed dims (the same cut the method applied to the weight), then copied if shapes agree;
      - otherwise the parameter restarts with empty state (as a freshly added parameter would).
    Returns ``{name: "kept" | "sliced" | "reset"}`` for logging and tests.
    """
    index_maps = index_maps or {}
    by_name = {old_names[id(p)]: old.state[p] for g in old.param_groups for p in g["params"] if p in old.state}
    outcome: dict[str, str] = {}
    for group in new.param_groups:
        for p in group["params"]:
            name = new_names[id(p)]
            state = by_name.get(name)
            if not state:
                continue
            moved, how = {}, "kept"
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    if value.shape != p.shape and name in index_maps:
                        for dim, idx in index_maps[name]:
                            value = value.index_select(dim, torch.as_tensor(idx, dtype=torch.long, device=value.device))
                        how = "sliced"
                    if value.shape != p.shape:
                        moved, how = None, "reset"
                        break
                    moved[key] = value.detach().clone().to(device=p.device, dtype=value.dtype)
                else:
                    moved[key] = value.clone() if isinstance(value, torch.Tensor) else value
            outcome[name] = how
            if moved is not None:
                new.state[p] = moved
    return outcome


def param_names(model: nn.Module, extra: Iterable[tuple[str, nn.Parameter]] = ()) -> dict[int, str]:
    names = {id(p): n for n, p in model.named_parameters()}
    for n, p in extra:
        names.setdefault(id(p), n)
    return names
