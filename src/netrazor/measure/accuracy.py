"""Loss and accuracy of a classifier on an in-memory ImageSet.

Images are normalised exactly like ``DataBundle.normalize`` (uint8 -> [0, 1] -> per-channel
standardisation). The model runs in eval mode under ``torch.inference_mode``; its train/eval
mode is restored afterwards.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from netrazor.data.types import ImageSet
from netrazor.errors import ConfigError, DataError, ModelError
from netrazor.measure._util import eval_mode, model_device, shape_mismatch


def normalize(images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """uint8 ``[N,C,H,W]`` -> float32 in [0, 1], then ``(x - mean) / std`` per channel (None: skip)."""
    x = images.float().div(255)
    if mean is not None and std is not None and len(mean) and len(std):
        m = torch.tensor(mean, device=images.device, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(std, device=images.device, dtype=x.dtype).view(1, -1, 1, 1)
        x = (x - m) / s
    return x


def evaluate(
    model: nn.Module,
    imageset: ImageSet,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    batch_size: int = 512,
) -> dict:
    """``{"loss": mean cross-entropy, "accuracy": fraction correct, "error": 1 - accuracy}``."""
    if len(imageset) == 0:
        raise DataError("cannot evaluate on an empty split; check the data set and its validation size.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}.")
    device = model_device(model)
    total_loss, correct = 0.0, 0
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(imageset), batch_size):
            x = normalize(imageset.images[start : start + batch_size].to(device), mean, std)
            y = imageset.labels[start : start + batch_size].to(device)
            try:
                logits = model(x)
            except RuntimeError as exc:
                raise shape_mismatch(exc, tuple(x.shape[1:])) from exc
            if logits.dim() != 2 or logits.shape[1] <= int(y.max()):
                raise ModelError(
                    f"the model outputs {tuple(logits.shape[1:])} scores per image but the labels go up to "
                    f"{int(y.max())}; it was built for another number of classes — check --data."
                )
            total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
    n = len(imageset)
    accuracy = correct / n
    return {"loss": total_loss / n, "accuracy": accuracy, "error": 1.0 - accuracy}
