"""Model factories the pipeline tests name in recipes (``factory: "pipeline_factories:tiny_cnn"``)."""

from torch import nn


def tiny_cnn(num_classes: int = 4, in_channels: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),  # 16x16 synthetic inputs -> 8 x 4 x 4; the class templates are spatial
        nn.Linear(8 * 4 * 4, num_classes),
    )
