"""Static size measures: parameters, non-zero parameters, bytes.

Shared tensors (tied weights) are counted once. ``model_bytes`` is the size of the *dense
float32* model in memory — every parameter and every floating-point buffer (BN running mean and
variance) at 4 bytes per element. Integer buffers (BN's ``num_batches_tracked`` step counter) are
training bookkeeping that inference does not need, so they are left out. The size of a packed
artifact (sparse, quantised, entropy-coded) comes from ``netrazor.codec``, not from here.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

FLOAT32_BYTES = 4


def _unique(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    seen: set[int] = set()
    out = []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (trainable or not), shared tensors once."""
    return int(sum(p.numel() for p in _unique(model.parameters())))


def count_nonzero(model: nn.Module) -> int:
    """Number of parameter elements that are not exactly zero (what sparsity leaves)."""
    with torch.no_grad():
        return int(sum(int(torch.count_nonzero(p)) for p in _unique(model.parameters())))


def model_bytes(model: nn.Module) -> int:
    """Dense float32 bytes: parameters + floating-point buffers, 4 bytes per element."""
    tensors = _unique(list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()])
    return int(sum(t.numel() for t in tensors) * FLOAT32_BYTES)
