"""Which surviving weights are admissible candidates: the pool, ranked by a cheap saliency.

The abstract nests criteria: "a decision on zeroing only a sub-set of those parameters can be made
using a combination of criteria like parameter magnitude and Hessian approximations". We use the
criterion the other way round as well [REC]: it narrows the search space *before* evolution, to the
``pool_factor * k`` least salient surviving weights of the layer.

``"magnitude"``  saliency = |w|.
``"hessian"``    saliency = ½ F_ii w_i² — Optimal Brain Damage (LeCun et al. 1990) with the
                 Hessian diagonal replaced by the empirical Fisher diagonal F_ii = mean of squared
                 gradients of the cross-entropy over ``fisher_batches`` micro-batches of the
                 *training* split [REC: micro-batch size and count are knobs].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from netrazor.data.types import DataBundle
from netrazor.errors import ConfigError

POOLS = ("magnitude", "hessian")


def fisher_diagonal(model: nn.Module, layers: dict[str, nn.Module], data: DataBundle, micro_batches: int = 32,
                    micro_batch_size: int = 8, seed: int = 0, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Empirical Fisher diagonal of each layer's weight on random training examples (never test)."""
    g = torch.Generator().manual_seed(seed)
    n = micro_batches * micro_batch_size
    idx = torch.randperm(len(data.train), generator=g)[:n]
    x_all = data.normalize(data.train.images[idx]).to(device)
    y_all = data.train.labels[idx].to(device)
    fisher = {name: torch.zeros_like(m.weight) for name, m in layers.items()}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(idx), micro_batch_size):
            model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_all[start:start + micro_batch_size]), y_all[start:start + micro_batch_size])
            loss.backward()
            for name, m in layers.items():
                fisher[name] += m.weight.grad.detach() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    count = max(1, (len(idx) + micro_batch_size - 1) // micro_batch_size)
    return {name: f / count for name, f in fisher.items()}


def saliency(weight: torch.Tensor, kind: str, fisher: torch.Tensor | None = None) -> torch.Tensor:
    if kind == "magnitude":
        return weight.detach().abs()
    if kind == "hessian":
        if fisher is None:
            raise ConfigError("candidate_pool='hessian' needs the Fisher diagonal; call fisher_diagonal first.")
        return 0.5 * fisher * weight.detach() ** 2
    raise ConfigError(f"unknown candidate_pool {kind!r}; choose one of {', '.join(POOLS)}.")


def candidate_pool(score: torch.Tensor, alive: torch.Tensor, k: int, pool_factor: float) -> torch.Tensor:
    """Flat indices of the ``max(k, pool_factor*k)`` least salient surviving weights, sorted by
    increasing saliency (ties by index, so the pool is deterministic)."""
    # The search bookkeeping lives on the CPU; only candidate weights go to the model's device.
    alive_idx = torch.nonzero(alive.flatten().cpu(), as_tuple=False).squeeze(1)
    size = min(alive_idx.numel(), max(k, int(round(pool_factor * k))))
    s = score.detach().flatten().cpu()[alive_idx]
    order = torch.argsort(s, stable=True)[:size]
    return alive_idx[order]
