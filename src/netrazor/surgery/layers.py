"""Whitelisted layer types as data: ``module -> {"type", "args"}`` and back, no pickle.

Only the layers listed here can appear in a saved architecture; their constructor arguments are
read from the module's attributes. netrazor's own parameter-free helpers (``PadShortcut`` of the
ResNet zoo) are included; the gates method's layers are registered on first use (see
``_load_method_layers``).
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from netrazor.errors import CheckpointError
from netrazor.models.resnet import PadShortcut


def _t(v):
    return list(v) if isinstance(v, tuple) else v


def _conv(m) -> dict:
    return {"in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": _t(m.kernel_size),
            "stride": _t(m.stride), "padding": _t(m.padding), "dilation": _t(m.dilation), "groups": m.groups,
            "bias": m.bias is not None, "padding_mode": m.padding_mode}


def _bn(m) -> dict:
    return {"num_features": m.num_features, "eps": m.eps, "momentum": m.momentum, "affine": m.affine,
            "track_running_stats": m.track_running_stats}


def _pool(m, keys) -> dict:
    return {k: _t(getattr(m, k)) for k in keys}


EXTRACT: dict[str, tuple[type, Callable[[nn.Module], dict]]] = {
    "Conv1d": (nn.Conv1d, _conv),
    "Conv2d": (nn.Conv2d, _conv),
    "Linear": (nn.Linear, lambda m: {"in_features": m.in_features, "out_features": m.out_features,
                                     "bias": m.bias is not None}),
    "BatchNorm1d": (nn.BatchNorm1d, _bn),
    "BatchNorm2d": (nn.BatchNorm2d, _bn),
    "ReLU": (nn.ReLU, lambda m: {"inplace": m.inplace}),
    "ReLU6": (nn.ReLU6, lambda m: {"inplace": m.inplace}),
    "LeakyReLU": (nn.LeakyReLU, lambda m: {"negative_slope": m.negative_slope, "inplace": m.inplace}),
    "Sigmoid": (nn.Sigmoid, lambda m: {}),
    "Tanh": (nn.Tanh, lambda m: {}),
    "Identity": (nn.Identity, lambda m: {}),
    "Flatten": (nn.Flatten, lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim}),
    "Dropout": (nn.Dropout, lambda m: {"p": m.p, "inplace": m.inplace}),
    "MaxPool2d": (nn.MaxPool2d, lambda m: _pool(m, ("kernel_size", "stride", "padding", "dilation", "ceil_mode"))),
    "AvgPool2d": (nn.AvgPool2d, lambda m: _pool(m, ("kernel_size", "stride", "padding", "ceil_mode",
                                                    "count_include_pad"))),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, lambda m: {"output_size": _t(m.output_size)}),
    "Sequential": (nn.Sequential, lambda m: {}),
}

# netrazor's own parameter-free block helpers
EXTRACT["PadShortcut"] = (PadShortcut, lambda m: {"in_channels": m.in_channels,
                                                  "out_channels": m.out_channels, "stride": m.stride})

_EXTRAS_LOADED = False


def _load_method_layers() -> None:
    """Layers the methods create (gates: removed branch, input-selecting first layer); imported late
    because those packages may import surgery themselves."""
    global _EXTRAS_LOADED
    if _EXTRAS_LOADED:
        return
    from netrazor.methods.gates.structures import InputSelectLinear, ZeroBranch

    EXTRACT["ZeroBranch"] = (ZeroBranch, lambda m: {})
    EXTRACT["InputSelectLinear"] = (InputSelectLinear, lambda m: {
        "in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None})
    _EXTRAS_LOADED = True


class Unsupported(Exception):
    """A module or op that cannot be written as data."""


def layer_record(module: nn.Module) -> dict[str, Any]:
    """``{"type": name, "args": {...}}`` of a whitelisted layer; raises Unsupported otherwise."""
    _load_method_layers()
    for name, (cls, extract) in EXTRACT.items():
        if type(module) is cls:
            return {"type": name, "args": extract(module)}
    raise Unsupported(f"{type(module).__module__}.{type(module).__name__}")


def build_layer(record: dict) -> nn.Module:
    """Inverse of :func:`layer_record` (fresh parameters; weights are loaded afterwards)."""
    _load_method_layers()
    if not isinstance(record, dict) or record.get("type") not in EXTRACT or not isinstance(record.get("args"), dict):
        raise CheckpointError(
            f"layer record {str(record)[:120]!r} is not one of the whitelisted layers "
            f"({', '.join(EXTRACT)}); the file is corrupt or from a newer netrazor."
        )
    cls, _ = EXTRACT[record["type"]]
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in record["args"].items()}
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot build {record['type']} with {record['args']} ({exc}); the file is corrupt.") from exc
