"""MobileNetV2 (Sandler et al. 2018), CIFAR variant.

As in the common CIFAR ports (kuangliu/pytorch-cifar), the stem conv has stride 1 instead of 2
and the second stage (24 channels) stride 1 instead of 2, so a 32x32 input ends at 4x4 (not 1x1)
before the global pool. Everything else follows the paper's table 2: stages
(expansion t, channels c, blocks n, stride s) = (1,16,1,1) (6,24,2,1*) (6,32,3,2) (6,64,4,2)
(6,96,3,1) (6,160,3,2) (6,320,1,1), a 1x1 conv to 1280, global average pool, linear.
Residual connections only where stride is 1 and channels match (the paper's rule); there is
no rectifier after the add (linear bottleneck).

Deviations, on purpose: rectifiers are ``nn.ReLU`` (not ReLU6, like the CIFAR ports) so that
every rectifier in the zoo is the same module type for methods that hook them; ``width_mult``
uses the zoo's plain rounding (no divisible-by-8 rule) and scales the 1280 head as well;
``depth_mult`` scales the blocks per stage (at least 1).
Names: ``stem.{conv,bn,relu}``, ``blocks.{i}.branch.{expand,bn1,relu1,dw,bn2,relu2,project,bn3}``
(no expand/bn1/relu1 when t = 1), ``blocks.{i}.shortcut`` (``nn.Identity`` when residual),
``head.{conv,bn,relu}``, ``pool``, ``flatten``, ``fc``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from netrazor.models._common import scale_depth, scale_width

# (expansion, channels, blocks, stride) — stage 2's stride is 1 for CIFAR (paper: 2).
STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection; ``branch(x) + x`` when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        if expansion != 1:
            layers["expand"] = nn.Conv2d(in_channels, hidden, 1, bias=False)
            layers["bn1"] = nn.BatchNorm2d(hidden)
            layers["relu1"] = nn.ReLU()
        layers["dw"] = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        layers["bn2"] = nn.BatchNorm2d(hidden)
        layers["relu2"] = nn.ReLU()
        layers["project"] = nn.Conv2d(hidden, out_channels, 1, bias=False)
        layers["bn3"] = nn.BatchNorm2d(out_channels)
        self.branch = nn.Sequential(layers)
        self.residual = stride == 1 and in_channels == out_channels
        # Only a residual block has a shortcut; ``None`` keeps the state_dict free of empty entries.
        self.shortcut = nn.Identity() if self.residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        return out + self.shortcut(x) if self.shortcut is not None else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width_mult: float = 1.0, depth_mult: float = 1.0):
        super().__init__()
        stem = scale_width(32, width_mult)
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False),
                bn=nn.BatchNorm2d(stem),
                relu=nn.ReLU(),
            )
        )
        blocks = []
        channels = stem
        for expansion, width, count, stride in STAGES:
            width = scale_width(width, width_mult)
            for b in range(scale_depth(count, depth_mult)):
                blocks.append(InvertedResidual(channels, width, stride if b == 0 else 1, expansion))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        last = scale_width(1280, width_mult)
        self.head = nn.Sequential(
            OrderedDict(conv=nn.Conv2d(channels, last, 1, bias=False), bn=nn.BatchNorm2d(last), relu=nn.ReLU())
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(last, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.head(self.blocks(self.stem(x))))))


def build_mobilenetv2(*, num_classes, in_channels, input_size, width_mult, depth_mult):
    return MobileNetV2(num_classes, in_channels, width_mult, depth_mult)
