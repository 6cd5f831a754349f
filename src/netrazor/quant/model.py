"""Quantise the weights of a whole model, layer by layer.

A "layer" is a module with a ``weight`` of rank ≥ 2 (Linear, Conv*): its weight is
quantised on its surviving entries. A layer's ``bias`` is quantised too when asked
(``bias_bits``; per tensor k-means, zeros kept): on a pruned LeNet the float32 biases were a
quarter of the .nrz file, and the codec codes a quantised bias through its codebook like a
weight. Norms and buffers stay float32. The result keeps the original model untouched and
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
    search recorded (per-layer eval values per bit width, baseline, final joint value);
    ``bias_bits``: ``{layer: bits}`` of the layers whose bias was quantised (k-means, per tensor),
    ``biases``: their :class:`Quantized`.
    """

    model: nn.Module
    bits: dict[str, int]
    method: str
    per_channel: bool = False
    layers: dict[str, Quantized] = field(default_factory=dict)
    evals: dict[str, Any] = field(default_factory=dict)
    bias_bits: dict[str, int] = field(default_factory=dict)
    biases: dict[str, Quantized] = field(default_factory=dict)

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
            "bias_bits": dict(self.bias_bits),
            "layers": layers,
            "evals": self.evals,
        }


def bias_layers(model: nn.Module, min_size: int = 1) -> dict[str, nn.Module]:
    """Quantisable layers with a floating ``bias`` of at least ``min_size`` elements."""
    out = {}
    for name, module in quantizable_layers(model).items():
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor) and torch.is_floating_point(bias) and bias.numel() >= min_size:
            out[name] = module
    return out


def _resolve_bits(model: nn.Module, bits: int | Mapping[str, int], layers: Mapping[str, nn.Module] | None = None) -> dict[str, int]:
    layers = quantizable_layers(model) if layers is None else layers
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


def quantize_bias(module: nn.Module, bits: int) -> Quantized:
    """Quantise ``module.bias`` in place: per-tensor k-means on its non-zero entries (a bias has no
    channel structure to share levels over; zeros stay exactly zero, as for weights)."""
    q = quantize_tensor(module.bias.data, bits, method="kmeans")
    module.bias.data.copy_(q.dequantized)
    return q


def quantize_model(
    model: nn.Module,
    bits: int | Mapping[str, int],
    method: str = "kmeans",
    per_channel: bool = False,
    bias_bits: int | Mapping[str, int] | None = None,
    **kw: Any,
) -> QuantResult:
    """Quantise a copy of ``model``: every quantisable layer (int ``bits``) or the named ones (dict).

    Layers absent from a dict stay float32. ``bias_bits`` (int: every layer with a bias; dict:
    the named layers; None: no bias) quantises biases with per-tensor k-means. ``kw`` goes to the
    weight quantiser (e.g. k-means ``init``, ``iters``).
    """
    resolved = _resolve_bits(model, bits)
    resolved_bias = {} if bias_bits is None else _resolve_bits(model, bias_bits, bias_layers(model))
    out = copy.deepcopy(model)
    layers = quantizable_layers(out)
    done: dict[str, Quantized] = {}
    biases: dict[str, Quantized] = {}
    with torch.no_grad():
        for name, b in resolved.items():
            done[name] = quantize_layer(layers[name], b, method, per_channel, **kw)
        for name, b in resolved_bias.items():
            biases[name] = quantize_bias(layers[name], b)
    return QuantResult(out, resolved, method, per_channel, done, bias_bits=resolved_bias, biases=biases)
