"""The in-memory form of every data set: decoded uint8 tensors, split three ways.

Why uint8 in memory: decoding (PNG/JPEG/IDX) happens once; batches are cut,
augmented and normalised on tensors, so data loading is never the bottleneck.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from netrazor.errors import DataError


@dataclass
class ImageSet:
    """Images as uint8 ``[N, C, H, W]`` and labels as int64 ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise DataError(f"labels must be [N] with N={len(self.images)}, got {tuple(self.labels.shape)}")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index])


@dataclass
class DataBundle:
    """Train / validation / test splits plus what a model needs to know about them.

    ``val`` is carved from the training set with a fixed seed: every selection
    (early stopping, thresholds, recipe choices) uses ``val``; ``test`` is for the
    final number only.
    """

    name: str
    train: ImageSet
    val: ImageSet
    test: ImageSet
    num_classes: int
    classes: list[str] = field(default_factory=list)
    # Per-channel statistics in [0, 1] units, computed on the train split.
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    # Default augmentation for training: "none" or "crop_flip" (CIFAR-style).
    augment: str = "none"

    def __post_init__(self) -> None:
        if not self.mean:
            x = self.train.images.float().div_(255)
            self.mean = tuple(x.mean(dim=(0, 2, 3)).tolist())
            self.std = tuple(x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist())
        if not self.classes:
            self.classes = [str(i) for i in range(self.num_classes)]

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.images.shape[2]), int(self.train.images.shape[3])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one example, as ``measure`` and the models expect."""
        return (self.in_channels, *self.image_size)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, C, H, W]`` -> float32, scaled to [0, 1] then standardised per channel."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return (images.float().div(255) - mean) / std


def make_synthetic(
    n_train: int = 1200,
    n_val: int = 300,
    n_test: int = 300,
    num_classes: int = 4,
    shape: tuple[int, int, int] = (1, 16, 16),
    noise: float = 0.35,
    seed: int = 0,
) -> DataBundle:
    """A small learnable image task for tests and examples (no files needed).

    Each class is a fixed random smooth template; examples are the template plus
    noise and a random shift of up to one pixel, so a small net reaches high
    accuracy in a few epochs while a constant predictor stays at chance.
    """
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    coarse = torch.rand(num_classes, c, max(2, h // 4), max(2, w // 4), generator=g)
    templates = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)

    def draw(n: int) -> ImageSet:
        labels = torch.randint(0, num_classes, (n,), generator=g)
        x = templates[labels] + noise * torch.randn(n, c, h, w, generator=g)
        shifts = torch.randint(-1, 2, (n, 2), generator=g)
        x = torch.stack([torch.roll(xi, (int(s[0]), int(s[1])), dims=(1, 2)) for xi, s in zip(x, shifts)])
        images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return ImageSet(images, labels)

    return DataBundle(
        name="synthetic",
        train=draw(n_train),
        val=draw(n_val),
        test=draw(n_test),
        num_classes=num_classes,
    )
