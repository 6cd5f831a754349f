"""Turning a rectifier into the identity, as exactly as the data allows.

A layer with H_l = 0 has every channel constant: always on (the rectifier passes z unchanged) or
always off (ReLU outputs 0, LeakyReLU/PReLU a*z). ``nn.Identity`` is exact for the first kind
only; for an always-off channel it would pass z through. So before the swap we scale such a
channel where a single op produces it -- the BatchNorm's gamma and beta of that channel, or the
Conv/Linear's output row and bias -- by the rectifier's negative slope (0 for ReLU, a for
LeakyReLU/PReLU/SlopeActivation). The identity then outputs what the rectifier did on the
measured data (exact for piecewise-linear rectifiers; GELU's negative side is treated as 0). [REC] Where the input comes from an add (post-add ReLU of a residual block) no
single op can be zeroed; the swap is then approximate for those channels and the retraining that
follows absorbs it (the count is recorded as ``inexact_channels``).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from netrazor.methods.entropy_depth.entropy import LayerEntropy, SlopeActivation
from netrazor.methods.entropy_depth.graph import WEIGHTED_TYPES
from netrazor.surgery import replace_activation

log = logging.getLogger(__name__)

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Swap ``model.<name>`` for ``new`` in place (``netrazor.surgery.replace_activation``)."""
    replace_activation(model, name, new)


def negative_slope(rectifier: nn.Module, channels: torch.Tensor) -> torch.Tensor:
    """What the rectifier multiplies a negative input by, per channel (0 for ReLU/ReLU6/GELU).

    [REC] GELU is not piecewise linear: for an always-off GELU channel 0 is an approximation.
    """
    if isinstance(rectifier, nn.LeakyReLU):
        return torch.full((channels.numel(),), float(rectifier.negative_slope))
    if isinstance(rectifier, nn.PReLU):
        w = rectifier.weight.detach().flatten()
        return w[channels] if w.numel() > 1 else w.expand(channels.numel()).clone()
    if isinstance(rectifier, SlopeActivation):
        return rectifier.alpha.detach().expand(channels.numel()).clone()
    return torch.zeros(channels.numel())


@torch.no_grad()
def scale_channels(model: nn.Module, producer: str | None, channels: torch.Tensor, factors: torch.Tensor) -> bool:
    """Multiply the output of ``producer`` by ``factors`` on ``channels``; False if it cannot be done.

    For an always-off channel of a rectifier with negative slope a, the rectifier computes a*z;
    scaling the producer's channel by a makes the identity compute the same (a = 0: ReLU).
    """
    if channels.numel() == 0:
        return True
    if producer is None:
        return False
    mod = model.get_submodule(producer)
    if isinstance(mod, _NORM_TYPES) and mod.affine:
        f = factors.to(mod.weight.dtype)
        mod.weight[channels] *= f
        mod.bias[channels] *= f
        return True
    if isinstance(mod, WEIGHTED_TYPES) and getattr(mod, "groups", 1) == 1:
        f = factors.to(mod.weight.dtype).view(-1, *([1] * (mod.weight.dim() - 1)))
        mod.weight[channels] *= f
        if mod.bias is not None:
            mod.bias[channels] *= factors.to(mod.bias.dtype)
        return True
    return False


def linearise(model: nn.Module, name: str, entropy: LayerEntropy | None = None, producer: str | None = None) -> int:
    """Replace rectifier ``name`` by ``nn.Identity`` (always-off channels zeroed first when possible).

    Returns the number of always-off channels that could not be made exact (0 when exact).
    """
    inexact = 0
    if entropy is not None:
        off = entropy.always_off.nonzero().flatten()
        slopes = negative_slope(model.get_submodule(name), off)
        if off.numel() and not scale_channels(model, producer, off, slopes):
            inexact = int(off.numel())
            log.info("linearising %s: %d always-off channels come from a non-zeroable op; swap is approximate", name, inexact)
    set_module(model, name, nn.Identity())
    return inexact
