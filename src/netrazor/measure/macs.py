"""Multiply-accumulates of one forward pass, counted by ``torch.utils.flop_counter``.

What counts (our convention, stated because papers differ): PyTorch's ``FlopCounterMode``
counts matrix products and convolutions (``mm``/``addmm``/``bmm``/``convolution`` …) at 2 flops
per multiply-accumulate, so MACs = flops / 2 = the conv and linear multiply-accumulates.
Bias additions, batch norm, activations, residual additions and pooling are *not* counted —
the usual "MACs" of the pruning literature (e.g. He et al. 2016's FLOPs for ResNets). Batch
norm in eval mode is an affine per-channel op that surgery can fold into the preceding conv.
The count is for a batch of one input of ``input_shape`` in eval mode.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from netrazor.measure._util import check_shape, eval_mode, model_device, model_dtype


def _count_flops(model: nn.Module, input_shape: Sequence[int]) -> FlopCounterMode:
    shape = check_shape(input_shape)
    x = torch.zeros(1, *shape, device=model_device(model), dtype=model_dtype(model))
    counter = FlopCounterMode(display=False)
    with eval_mode(model), torch.no_grad(), counter:
        model(x)
    return counter


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs of one forward pass on a batch of 1 (``input_shape`` = ``(C, H, W)``, no batch)."""
    return int(_count_flops(model, input_shape).get_total_flops()) // 2


def macs_by_module(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """MACs per module name (as FlopCounterMode names them, "Global" = the total), batch of 1."""
    counts = _count_flops(model, input_shape).get_flop_counts()
    return {name: int(sum(ops.values())) // 2 for name, ops in counts.items()}
