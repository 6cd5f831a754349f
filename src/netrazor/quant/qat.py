"""Quantisation-aware fine-tuning with straight-through gradients, as a training-loop callback.

The straight-through estimator (Bengio et al. 2013; used by BinaryConnect and Deep
Compression's shared-weight fine-tune) runs the forward pass with quantised weights and
applies the gradient, unchanged, to a float "shadow" copy. With the Trainer's hooks
(CONTRACTS.md, netrazor.train Callback):

- ``on_train_start``: remember the float weights and the sparsity masks, quantise.
- ``on_after_backward``: the gradient was taken at the quantised point; swap the float shadow
  back in (the gradient stays — that is the straight-through step) and zero the gradient at
  pruned positions so the optimiser leaves them alone.
- ``on_step_end``: re-apply the masks (momentum/weight decay must not revive pruned weights),
  store the new shadow, re-quantise (k-means warm-starts from the previous codebook).
- ``on_train_end``: leave the model holding the quantised weights.

Knobs: ``bits`` (int or ``{layer: bits}``), ``method``, ``per_channel``, ``kmeans_iters`` (Lloyd
steps per re-quantisation; few are enough with a warm start).
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
from torch import nn

from netrazor.quant.model import QuantResult, _resolve_bits, quantizable_layers
from netrazor.quant.quantizers import Quantized, quantize_tensor

from netrazor.train.callbacks import Callback


class QuantizationAwareCallback(Callback):
    """Straight-through quantisation-aware training (see module docstring)."""

    def __init__(self, bits: int | Mapping[str, int], method: str = "kmeans", per_channel: bool = False, kmeans_iters: int = 5):
        self.bits = bits
        self.method = method
        self.per_channel = per_channel
        self.kmeans_iters = kmeans_iters
        self._layers: dict[str, nn.Module] = {}
        self._resolved: dict[str, int] = {}
        self._shadow: dict[str, torch.Tensor] = {}
        self._masks: dict[str, torch.Tensor] = {}
        self._quant: dict[str, Quantized] = {}
        self._quantized_now = False
        self._pending: dict[str, torch.Tensor] = {}

    # -- helpers ---------------------------------------------------------------------------
    def attach(self, model: nn.Module) -> None:
        """Start from ``model``'s current float weights (called by ``on_train_start``)."""
        self._resolved = _resolve_bits(model, self.bits)
        mods = quantizable_layers(model)
        self._layers = {n: mods[n] for n in self._resolved}
        with torch.no_grad():
            for name, module in self._layers.items():
                # on resume the float shadow comes from the checkpoint, not the (quantised) weights
                start = self._pending.get(name)
                if start is None or tuple(start.shape) != tuple(module.weight.shape):
                    start = module.weight.data
                self._shadow[name] = start.detach().to(module.weight.device, module.weight.dtype).clone()
                self._masks[name] = self._shadow[name] != 0
        self._pending = {}
        self._quantize()

    def _quantize(self) -> None:
        with torch.no_grad():
            for name, module in self._layers.items():
                kw: dict[str, Any] = {}
                if self.method == "kmeans":
                    kw["iters"] = self.kmeans_iters
                    prev = self._quant.get(name)
                    if prev is not None and prev.codebook.numel() == 2 ** self._resolved[name]:
                        kw["init"] = prev.codebook
                q = quantize_tensor(self._shadow[name], self._resolved[name], self.method, self.per_channel, **kw)
                self._quant[name] = q
                module.weight.data.copy_(q.dequantized)
        self._quantized_now = True

    def _restore_shadow(self) -> None:
        with torch.no_grad():
            for name, module in self._layers.items():
                module.weight.data.copy_(self._shadow[name])
                if module.weight.grad is not None:
                    module.weight.grad.mul_(self._masks[name])
        self._quantized_now = False

    # -- Trainer hooks (CONTRACTS.md) ---------------------------------------------------------
    def on_train_start(self, trainer: Any) -> None:
        self.attach(trainer.model)

    def on_after_backward(self, trainer: Any) -> None:
        self._restore_shadow()

    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        with torch.no_grad():
            for name, module in self._layers.items():
                module.weight.data.mul_(self._masks[name])
                self._shadow[name] = module.weight.data.clone()
        self._quantize()

    def on_train_end(self, trainer: Any) -> None:
        if not self._quantized_now:
            self._quantize()

    def state_dict(self) -> dict:
        # the float shadow weights are what training updates: a resume must continue from them
        return {
            "bits": dict(self._resolved),
            "method": self.method,
            "per_channel": self.per_channel,
            "shadow": {n: t.detach().cpu().clone() for n, t in self._shadow.items()},
        }

    def load_state_dict(self, d: dict) -> None:
        self.method = d.get("method", self.method)
        self.per_channel = d.get("per_channel", self.per_channel)
        if d.get("bits"):
            self.bits = dict(d["bits"])
        self._pending = dict(d.get("shadow") or {})

    @property
    def quantized(self) -> dict[str, Quantized]:
        """The latest per-layer quantisation (indices, codebooks)."""
        return dict(self._quant)

    def result(self, model: nn.Module) -> QuantResult:
        """A :class:`QuantResult` for ``model`` as trained (a copy; the codebooks QAT ended with),
        ready for ``pack(result.model, path, quantisation=result.to_dict())``."""
        if not self._quantized_now:
            self._quantize()
        return QuantResult(copy.deepcopy(model), dict(self._resolved), self.method, self.per_channel, dict(self._quant))
