"""Small helpers shared by the measurements: the model's device and a mode-restoring eval context."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from netrazor.errors import ConfigError, ModelError


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype inputs should have (the first floating parameter's; float32 otherwise)."""
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` (every submodule) in eval mode; restore each submodule's own flag afterwards."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags.items():
            m.training = flag


def check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape) if input_shape is not None else ()
    if len(shape) == 0 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise ConfigError(f"input_shape must be positive ints without the batch, e.g. (1, 28, 28); got {input_shape!r}.")
    return shape


def shape_mismatch(exc: Exception, input_shape: Sequence[int]) -> ModelError:
    """The user-facing error for a model that cannot run on inputs of ``input_shape``."""
    return ModelError(
        f"the model cannot run on inputs of shape {tuple(input_shape)} ({exc}). Was it trained on this data set? "
        "Check --data, or the input shape (channels x height x width)."
    )


def check_accepts(model: nn.Module, input_shape: Sequence[int]) -> None:
    """Raise ``ModelError`` (not torch's shape soup) when ``model`` cannot run on inputs of ``input_shape``."""
    x = torch.zeros(1, *input_shape, device=model_device(model), dtype=model_dtype(model))
    try:
        with eval_mode(model), torch.inference_mode():
            model(x)
    except RuntimeError as exc:
        raise shape_mismatch(exc, input_shape) from exc
