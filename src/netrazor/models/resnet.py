"""CIFAR ResNets: ResNet-20/32/56 (He et al. 2016, sec. 4.2) and ResNet-18 with a CIFAR stem.

ResNet-6n+2 (He et al. 2016, "Deep Residual Learning for Image Recognition", CIFAR-10 section):
a 3x3 conv with 16 filters, then 3 stages of n basic blocks with 16, 32, 64 filters (the first
block of stages 2 and 3 has stride 2), global average pooling and one linear layer.
n = 3, 5, 9 gives ResNet-20, -32, -56 (about 0.27 M, 0.46 M, 0.85 M parameters).

Shortcut when the shape changes — knob ``shortcut``:
  "projection" (default; the paper's option B): a 1x1 conv (stride 2) + BN. It costs ~2.8 k
      parameters on ResNet-20 (272,474 vs 269,722) but keeps every tensor op a module with
      weights, which channel surgery and dependency graphs (Torch-Pruning) handle directly.
  "pad" (the paper's option A, used for its CIFAR table): stride-2 subsampling and zero-padding
      of the new channels; parameter-free.
ResNet-18 (He et al. 2016 ImageNet layout [2, 2, 2, 2], 64-512 channels) uses the usual CIFAR
stem of the common CIFAR ports: one 3x3 stride-1 conv, no max-pool; projection shortcuts.

Block layout (docs/models.md): ``BasicBlock.branch`` is conv1-bn1-relu1-conv2-bn2,
``BasicBlock.shortcut`` is ``nn.Identity`` or the projection, and ``BasicBlock.relu`` is the
rectifier after the addition — its own module so it can be hooked or replaced by name.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from netrazor.errors import ModelError
from netrazor.models._common import scale_depth, scale_width

SHORTCUTS = ("projection", "pad")


class PadShortcut(nn.Module):
    """Option A shortcut: take every ``stride``-th pixel and zero-pad the extra channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ModelError("a 'pad' shortcut cannot reduce channels; use shortcut='projection'.")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        if extra == 0:
            return x
        # Split the zero channels on both sides, as the common option-A ports do.
        before = extra // 2
        return nn.functional.pad(x, (0, 0, 0, 0, before, extra - before))

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; ``relu(branch(x) + shortcut(x))``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "projection"):
        super().__init__()
        self.branch = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                bn1=nn.BatchNorm2d(out_channels),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False),
                bn2=nn.BatchNorm2d(out_channels),
            )
        )
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "pad" and out_channels >= in_channels:
            self.shortcut = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                    bn=nn.BatchNorm2d(out_channels),
                )
            )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.branch(x) + self.shortcut(x))


class CifarResNet(nn.Module):
    """stem (conv-bn-relu) -> stages of BasicBlocks -> global average pool -> fc.

    Children: ``stem``, ``layer1`` … ``layerK`` (each an ``nn.Sequential`` of blocks), ``pool``,
    ``flatten``, ``fc``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        stem_width: int,
        widths: Sequence[int],
        blocks: Sequence[int],
        strides: Sequence[int],
        shortcut: str = "projection",
    ):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ModelError(f"unknown shortcut {shortcut!r}; use one of {', '.join(SHORTCUTS)}.")
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(in_channels, stem_width, 3, stride=1, padding=1, bias=False),
                bn=nn.BatchNorm2d(stem_width),
                relu=nn.ReLU(),
            )
        )
        channels = stem_width
        for index, (width, count, stride) in enumerate(zip(widths, blocks, strides), start=1):
            layer = []
            for b in range(count):
                layer.append(BasicBlock(channels, width, stride if b == 0 else 1, shortcut))
                channels = width
            self.add_module(f"layer{index}", nn.Sequential(*layer))
        self.num_stages = len(widths)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He (Kaiming) normal init for convs, as in He et al. 2015/2016; BN starts at identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for index in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{index}")(x)
        return self.fc(self.flatten(self.pool(x)))


def _stage_list(name: str, value, stages: int) -> list[int]:
    if len(value) != stages or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        raise ModelError(f"{name} must be {stages} positive ints (one per stage), got {value!r}.")
    return [int(v) for v in value]


def _build(base_blocks, base_widths, strides, stem, *, num_classes, in_channels, width_mult, depth_mult,
           shortcut, blocks, widths):
    stages = len(base_blocks)
    # Explicit per-stage lists (architecture as data, e.g. from EBCLE shaping) are final:
    # the multipliers apply only to the defaults.
    block_list = _stage_list("blocks", blocks, stages) if blocks is not None else [
        scale_depth(n, depth_mult) for n in base_blocks
    ]
    width_list = _stage_list("widths", widths, stages) if widths is not None else [
        scale_width(c, width_mult) for c in base_widths
    ]
    stem_width = scale_width(stem, width_mult) if widths is None else width_list[0]
    return CifarResNet(num_classes, in_channels, stem_width, width_list, block_list, strides, shortcut)


def cifar_resnet_builder(n: int):
    """Builder for ResNet-(6n+2): 3 stages of n blocks, 16/32/64 channels."""

    def build(*, num_classes, in_channels, input_size, width_mult, depth_mult, shortcut="projection",
              blocks=None, widths=None):
        return _build([n, n, n], [16, 32, 64], [1, 2, 2], 16, num_classes=num_classes, in_channels=in_channels,
                      width_mult=width_mult, depth_mult=depth_mult, shortcut=shortcut, blocks=blocks,
                      widths=widths)

    return build


def build_resnet18(*, num_classes, in_channels, input_size, width_mult, depth_mult, shortcut="projection",
                   blocks=None, widths=None):
    return _build([2, 2, 2, 2], [64, 128, 256, 512], [1, 2, 2, 2], 64, num_classes=num_classes,
                  in_channels=in_channels, width_mult=width_mult, depth_mult=depth_mult, shortcut=shortcut,
                  blocks=blocks, widths=widths)
