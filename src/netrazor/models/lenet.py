"""LeNet-300-100 and LeNet-5 (Caffe variant 20-50-500-10), for MNIST-sized inputs and others.

LeNet-300-100: the fully connected net of LeCun et al. 1998 as used in pruning work (Han et al.
2015, "Learning both Weights and Connections"): in -> 300 -> 100 -> classes, ReLU.
LeNet-5-Caffe: the Caffe example net (conv 5x5 20, max-pool 2, conv 5x5 50, max-pool 2, fc 500,
fc classes), no padding; 431,080 parameters for 1x28x28 and 10 classes.

Conventions (docs/models.md): both are ``nn.Sequential`` with named children so every layer has a
stable name; every rectifier is its own ``nn.ReLU`` instance. The Caffe prototxt has a single ReLU
(after ip1); like most PyTorch ports of it we also rectify after each conv (before the pool —
max-pool and ReLU commute, so the function is the same as ReLU after pool) so that each
conv stage has its own rectifier for methods that linearise layers.
``width_mult`` scales the hidden widths; ``depth_mult`` is accepted for a uniform API but the
number of hidden layers of a LeNet is fixed (it is part of the name).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from netrazor.errors import ModelError
from netrazor.models._common import conv_out, scale_width


class LeNet300(nn.Sequential):
    """Flatten -> fc1 (300) -> relu1 -> fc2 (100) -> relu2 -> fc3 (classes)."""

    def __init__(self, num_classes: int, in_channels: int, input_size: tuple[int, int], width_mult: float = 1.0):
        h1, h2 = scale_width(300, width_mult), scale_width(100, width_mult)
        features = in_channels * input_size[0] * input_size[1]
        super().__init__(
            OrderedDict(
                flatten=nn.Flatten(),
                fc1=nn.Linear(features, h1),
                relu1=nn.ReLU(),
                fc2=nn.Linear(h1, h2),
                relu2=nn.ReLU(),
                fc3=nn.Linear(h2, num_classes),
            )
        )


class LeNet5(nn.Sequential):
    """conv1 (5x5, 20) -> relu1 -> pool1 -> conv2 (5x5, 50) -> relu2 -> pool2 -> fc1 (500) -> relu3 -> fc2."""

    def __init__(self, num_classes: int, in_channels: int, input_size: tuple[int, int], width_mult: float = 1.0):
        c1, c2, f1 = scale_width(20, width_mult), scale_width(50, width_mult), scale_width(500, width_mult)
        h, w = input_size
        # Two valid 5x5 convs, each followed by a 2x2 max-pool (stride 2).
        for _ in range(2):
            h, w = conv_out(h, 5) // 2, conv_out(w, 5) // 2
        if h < 1 or w < 1:
            raise ModelError(
                f"lenet5 needs inputs of at least 16x16 (two valid 5x5 convs and two 2x2 pools), got "
                f"{input_size[0]}x{input_size[1]}; pass a larger input_size or use lenet300."
            )
        super().__init__(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, c1, kernel_size=5),
                relu1=nn.ReLU(),
                pool1=nn.MaxPool2d(2),
                conv2=nn.Conv2d(c1, c2, kernel_size=5),
                relu2=nn.ReLU(),
                pool2=nn.MaxPool2d(2),
                flatten=nn.Flatten(),
                fc1=nn.Linear(c2 * h * w, f1),
                relu3=nn.ReLU(),
                fc2=nn.Linear(f1, num_classes),
            )
        )


def build_lenet300(*, num_classes, in_channels, input_size, width_mult, depth_mult):
    return LeNet300(num_classes, in_channels, input_size, width_mult)


def build_lenet5(*, num_classes, in_channels, input_size, width_mult, depth_mult):
    return LeNet5(num_classes, in_channels, input_size, width_mult)
