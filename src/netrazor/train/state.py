"""Split nested Python state (optimizer / callback / RNG state) into tensors + plain JSON.

Why: checkpoints must not be pickles. ``optimizer.state_dict()`` is a nest of dicts with int keys,
tuples, floats and tensors; we store every tensor in safetensors under a dotted key and leave a
``{"__tensor__": key}`` placeholder in the JSON. Int keys and tuples are tagged so that
``unflatten(flatten(x)) == x`` exactly (the resume-exactness test depends on it).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from netrazor.errors import CheckpointError

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_ITEMS = "__items__"  # a dict whose keys are not all strings
_FLOAT = "__float__"  # nan / inf, which JSON cannot hold


def flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Return a JSON-safe copy of ``obj``; tensors are moved into ``tensors`` under ``prefix.*``."""
    if isinstance(obj, torch.Tensor):
        key = prefix
        if key in tensors:
            raise CheckpointError(f"duplicate state key {key!r}; this is a netrazor bug, please report it.")
        tensors[key] = obj.detach().cpu()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") for k in obj):
            return {k: flatten(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        return {_ITEMS: [[_key(k), flatten(v, f"{prefix}.{i}", tensors)] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {_TUPLE: [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {_FLOAT: repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalar
        return obj.item()
    raise CheckpointError(
        f"cannot store a {type(obj).__name__} at {prefix!r} in a checkpoint; callback state_dict() must "
        "return tensors, numbers, strings, lists, tuples and dicts only."
    )


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten`."""
    if isinstance(obj, dict):
        if _TENSOR in obj:
            key = obj[_TENSOR]
            if key not in tensors:
                raise CheckpointError(f"checkpoint tensor {key!r} is missing; the checkpoint is incomplete — delete it and restart.")
            return tensors[key]
        if _TUPLE in obj:
            return tuple(unflatten(v, tensors) for v in obj[_TUPLE])
        if _ITEMS in obj:
            return {k: unflatten(v, tensors) for k, v in obj[_ITEMS]}
        if _FLOAT in obj:
            return float(obj[_FLOAT])
        return {k: unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


def _key(k: Any) -> Any:
    if isinstance(k, (str, int)) and not isinstance(k, bool):
        return k
    raise CheckpointError(f"state dict key {k!r} is neither str nor int; it cannot be checkpointed.")

