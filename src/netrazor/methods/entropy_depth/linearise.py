"""Turning a rectifier into the identity, as exactly as the data allows.

A layer with H_l = 0 has every channel constant: always on (the rectifier passes z unchanged) or
always off (the rectifier outputs 0). ``nn.Identity`` is exact for the first kind only; for an
always-off channel it would pass the negative z through. So before the swap we make such a
channel's input exactly 0 where a single op produces it: the BatchNorm's gamma and beta of that
channel, or the Conv/Linear's output row and bias. The rectifier then outputs what it did on the
measured data. [REC] Where the input comes from an add (post-add ReLU of a residual block) no
single op can be zeroed; the swap is then approximate for those channels and the retraining that
follows absorbs it (the count is recorded as ``inexact_channels``).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from netrazor.methods.entropy_depth.entropy import LayerEntropy
from netrazor.methods.entropy_depth.graph import WEIGHTED_TYPES

log = logging.getLogger(__name__)

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Swap ``model.<name>`` for ``new`` through surgery.replace_activation (or a plain setattr)."""
    try:
        from netrazor.surgery import replace_activation  # type: ignore[attr-defined]
    except ImportError:
        replace_activation = None
    if replace_activation is not None:
        replace_activation(model, name, new)
        return
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


@torch.no_grad()
def zero_channels(model: nn.Module, producer: str | None, channels: torch.Tensor) -> bool:
    """Make the output of ``producer`` exactly 0 on ``channels``; False if it cannot be done."""
    if producer is None or channels.numel() == 0:
        return channels.numel() == 0
    mod = model.get_submodule(producer)
    if isinstance(mod, _NORM_TYPES) and mod.affine:
        mod.weight[channels] = 0
        mod.bias[channels] = 0
        return True
    if isinstance(mod, WEIGHTED_TYPES) and getattr(mod, "groups", 1) == 1:
        mod.weight[channels] = 0
        if mod.bias is not None:
            mod.bias[channels] = 0
        return True
    return False


def linearise(model: nn.Module, name: str, entropy: LayerEntropy | None = None, producer: str | None = None) -> int:
    """Replace rectifier ``name`` by ``nn.Identity`` (always-off channels zeroed first when possible).

    Returns the number of always-off channels that could not be made exact (0 when exact).
    """
    inexact = 0
    if entropy is not None:
        off = entropy.always_off.nonzero().flatten()
        if off.numel() and not zero_channels(model, producer, off):
            inexact = int(off.numel())
            log.info("linearising %s: %d always-off channels come from a non-zeroable op; swap is approximate", name, inexact)
    set_module(model, name, nn.Identity())
    return inexact
