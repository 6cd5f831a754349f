"""VGG-11 and VGG-16 with batch norm, CIFAR variant (Simonyan & Zisserman 2015; BN as in Ioffe &
Szegedy 2015), adaptive to small inputs such as 28x28 Fashion-MNIST.

Layout: 5 stages of 3x3 conv-BN-ReLU layers (VGG-11: 1,1,2,2,2 convs with 64,128,256,512,512
channels; VGG-16: 2,2,3,3,3), each stage ending in a 2x2 max-pool, then a global average pool
and the classifier. Knob ``classifier``:
  "linear" (default): one linear layer 512 -> classes, as in the common CIFAR ports (Liu et al.
      2017 "Network Slimming", kuangliu/pytorch-cifar). With 32x32 input the five pools already
      reach 1x1, so the average pool is a no-op there.
  "mlp": 512 -> 512 -> 512 -> classes with ReLU (the VGG head shrunk to CIFAR size, no dropout).
Small inputs: a stage's max-pool is skipped when the feature map is already below 2 pixels on a
side (28x28 pools to 14, 7, 3, 1 and skips the fifth pool), and the global average pool makes
any remaining size fit the classifier.
``depth_mult`` scales the conv layers per stage; ``width_mult`` the channels (classifier hidden
width included).
Names: ``features.conv{stage}_{i}``, ``features.bn{stage}_{i}``, ``features.relu{stage}_{i}``,
``features.pool{stage}``; then ``pool``, ``flatten``, ``classifier``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from netrazor.errors import ModelError
from netrazor.models._common import scale_depth, scale_width

STAGE_WIDTHS = (64, 128, 256, 512, 512)
STAGE_CONVS = {"vgg11": (1, 1, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3)}
CLASSIFIERS = ("linear", "mlp")


class VGG(nn.Module):
    def __init__(self, num_classes, in_channels, input_size, convs_per_stage, widths, classifier="linear",
                 hidden=512):
        super().__init__()
        if classifier not in CLASSIFIERS:
            raise ModelError(f"unknown classifier {classifier!r}; use one of {', '.join(CLASSIFIERS)}.")
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        h, w = input_size
        channels = in_channels
        for stage, (count, width) in enumerate(zip(convs_per_stage, widths), start=1):
            for i in range(1, count + 1):
                layers[f"conv{stage}_{i}"] = nn.Conv2d(channels, width, 3, padding=1, bias=False)
                layers[f"bn{stage}_{i}"] = nn.BatchNorm2d(width)
                layers[f"relu{stage}_{i}"] = nn.ReLU()
                channels = width
            if min(h, w) >= 2:
                layers[f"pool{stage}"] = nn.MaxPool2d(2)
                h, w = h // 2, w // 2
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        if classifier == "linear":
            self.classifier: nn.Module = nn.Linear(channels, num_classes)
        else:
            self.classifier = nn.Sequential(
                OrderedDict(
                    fc1=nn.Linear(channels, hidden),
                    relu1=nn.ReLU(),
                    fc2=nn.Linear(hidden, hidden),
                    relu2=nn.ReLU(),
                    fc3=nn.Linear(hidden, num_classes),
                )
            )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def vgg_builder(name: str):
    def build(*, num_classes, in_channels, input_size, width_mult, depth_mult, classifier="linear"):
        convs = [scale_depth(n, depth_mult) for n in STAGE_CONVS[name]]
        widths = [scale_width(c, width_mult) for c in STAGE_WIDTHS]
        return VGG(num_classes, in_channels, input_size, convs, widths, classifier, scale_width(512, width_mult))

    return build
