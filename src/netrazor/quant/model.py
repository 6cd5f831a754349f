"""Quantise the weights of a whole model, layer by layer.

A "layer" is a module with a ``weight`` of rank ≥ 2 (Linear, Conv*): its weight is
quantised on its surviving entries; biases, norms and buffers stay float32 (they are
few and the codec stores them raw). The result keeps the original model untouched and
holds a copy whose weights are the dequantised values (the model ``pack`` encodes and
``unpack`` rebuilds bit for bit).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from netrazor.errors import ConfigError
from netrazor.quant.quantizers import Quantized, quantize_tensor


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{module name: module}`` of every module whose ``weight`` parameter has rank ≥ 2."""
    out: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.dim() >= 2 and torch.is_floating_point(weight):
            out[name] = module
    return out


def layer_nonzeros(model: nn.Module) -> dict[str, int]:
    """Surviving (non-zero) weight count per quantisable layer."""
    return {name: int((m.weight != 0).sum()) for name, m in quantizable_layers(model).items()}


@dataclass
class QuantResult:
    """A quantised copy of a model and what was done to each layer.

    ``model``: the copy (weights = dequantised values; zeros kept); ``bits``: ``{layer: bits}``;
    ``layers``: the per-layer :class:`Quantized` (indices, codebook, scale); ``evals``: whatever the
    search recorded (per-layer eval values per bit width, baseline, final joint value).
    """

    model: nn.Module
    bits: dict[str, int]
    method: str
    per_channel: bool = False
    layers: dict[str, Quantized] = field(default_factory=dict)
    evals: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able summary (what ``pack(quantisation=...)`` stores in the file's spec)."""
        layers = {}
        for name, q in self.layers.items():
            entry = {"bits": q.bits, "levels": int(q.codebook.shape[-1])}
            if q.scale is not None:
                entry["scale"] = q.scale.tolist()
            if q.codebook.dim() == 1:
                entry["codebook"] = q.codebook.tolist()
            layers[name] = entry
        return {
            "method": self.method,
            "per_channel": self.per_channel,
            "bits": dict(self.bits),
            "layers": layers,
            "evals": self.evals,
        }


def _resolve_bits(model: nn.Module, bits: int | Mapping[str, int]) -> dict[str, int]:
    layers = quantizable_layers(model)
    if isinstance(bits, Mapping):
        unknown = sorted(set(bits) - set(layers))
        if unknown:
            raise ConfigError(f"no quantisable layer named {unknown}; choose from {sorted(layers)}.")
        return {name: int(b) for name, b in bits.items()}
    return {name: int(bits) for name in layers}


def quantize_layer(module: nn.Module, bits: int, method: str, per_channel: bool, **kw) -> Quantized:
    """Quantise ``module.weight`` in place (its data becomes the dequantised values)."""
    q = quantize_tensor(module.weight.data, bits, method=method, per_channel=per_channel, **kw)
    module.weight.data.copy_(q.dequantized)
    return q


def quantize_model(
    model: nn.Module,
    bits: int | Mapping[str, int],
    method: str = "kmeans",
    per_channel: bool = False,
    **kw: Any,
) -> QuantResult:
    """Quantise a copy of ``model``: every quantisable layer (int ``bits``) or the named ones (dict).

    Layers absent from a dict stay float32. ``kw`` goes to the quantiser (e.g. k-means ``init``, ``iters``).
    """
    resolved = _resolve_bits(model, bits)
    out = copy.deepcopy(model)
    layers = quantizable_layers(out)
    done: dict[str, Quantized] = {}
    with torch.no_grad():
        for name, b in resolved.items():
            done[name] = quantize_layer(layers[name], b, method, per_channel, **kw)
    return QuantResult(out, resolved, method, per_channel, done)
