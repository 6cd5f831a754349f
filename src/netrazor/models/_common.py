"""Shared helpers of the zoo: channel/depth scaling and input-shape resolution.

Scaling rules (one place, so every family agrees):
  width:  ``max(1, floor(c * width_mult + 0.5))`` — round half up, never below one channel.
  depth:  ``max(1, ceil(n * depth_mult))`` — ceil as in EfficientNet's compound scaling
          (Tan & Le, 2019), so a 0.5 multiplier never removes a whole stage.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from netrazor.errors import ModelError


def scale_width(channels: int, width_mult: float) -> int:
    """Channel count after the width multiplier (an int, at least 1)."""
    return max(1, int(math.floor(channels * width_mult + 0.5)))


def scale_depth(blocks: int, depth_mult: float) -> int:
    """Blocks (or layers) per stage after the depth multiplier (an int, at least 1)."""
    # The small epsilon keeps 3 * (1/3) from ceiling to 2 through float error.
    return max(1, int(math.ceil(blocks * depth_mult - 1e-9)))


def as_size(input_size: Any) -> tuple[int, int]:
    """``28`` or ``(28, 28)`` or ``[28, 28]`` -> ``(28, 28)``; anything else raises ModelError."""
    if isinstance(input_size, bool):
        raise ModelError(f"input_size must be an int or (H, W), got {input_size!r}; pass e.g. 28 or (32, 32).")
    if isinstance(input_size, int):
        size = (input_size, input_size)
    elif isinstance(input_size, Sequence) and not isinstance(input_size, str) and len(input_size) == 2:
        size = (input_size[0], input_size[1])
    else:
        raise ModelError(f"input_size must be an int or (H, W), got {input_size!r}; pass e.g. 28 or (32, 32).")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size):
        raise ModelError(f"input_size must hold positive ints, got {input_size!r}; pass e.g. 28 or (32, 32).")
    return int(size[0]), int(size[1])


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{name} must be a positive int, got {value!r}; pass e.g. {name}=10.")
    return int(value)


def positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ModelError(f"{name} must be a positive number, got {value!r}; pass e.g. {name}=1.0.")
    return float(value)


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Spatial size after a conv or pool (PyTorch's floor rule)."""
    return (size + 2 * padding - kernel) // stride + 1
