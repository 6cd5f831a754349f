"""Rectifier entropy: how often each channel of each rectifier is switched on.

Idea (EGP / NEPENTHE, Liao et al. 2023-2024; METHODS.md §3 [CODE]): a rectifier channel whose
input is always positive (always "on") or always negative ("off") behaves linearly on the data;
a layer whose every channel is constant can be replaced by the identity. The per-channel state
entropy measures how far a channel is from that.

For every rectifier module we hook its INPUT z and count, per channel, the positions
(batch x space) with z > 0 and with z < 0. Exactly-zero inputs are excluded from both counts
(NEPENTHE's rule: a pruned-to-zero pre-activation says nothing about the channel's state).
    p_c = #(z > 0) / (#(z > 0) + #(z < 0))       (p_c = 0 when the channel never is non-zero)
    H_c = -p log2 p - (1-p) log2 (1-p)            bits, H_c = 0 when p in {0, 1}
    H_l = mean of H_c over the non-constant channels of the layer; 0 if all channels are constant.
Counts stream over the batches (no activation is stored), so a whole split costs one pass.

What counts as a rectifier: nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.GELU and the learnable
slope activation of Layer Folding -- all judged by the SIGN of their input only. [REC] For ReLU6
the upper kink at 6 is not tracked: a ReLU6 layer with H_l = 0 is linear only where z <= 6.
Functional rectifiers (``F.relu`` inside ``forward``) are invisible to hooks: give every call
its own module (the netrazor zoo does).

Channel axis: dimension 1 (``[B, C]``, ``[B, C, L]``, ``[B, C, H, W]``); sequence models with
``[B, T, C]`` pass ``channel_dim=-1``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from netrazor.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class SlopeActivation(nn.Module):
    """``f(z) = max(z, 0) + alpha * min(z, 0)`` with one learnable scalar slope per layer.

    alpha = 0 is ReLU, alpha = 1 is the identity. Used by Layer Folding (Dror et al. 2021);
    lives here so the entropy hooks recognise it as a rectifier.
    """

    def __init__(self, alpha: float = 0.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.where(z >= 0, z, self.alpha * z)

    def extra_repr(self) -> str:
        return f"alpha={float(self.alpha):.4f}"


RECTIFIER_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.GELU,
    SlopeActivation,
)


def is_rectifier(module: nn.Module) -> bool:
    return isinstance(module, RECTIFIER_TYPES)


def find_rectifiers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Rectifier modules of ``model`` in registration order, as ``(qualified name, module)``."""
    return [(name, m) for name, m in model.named_modules() if name and is_rectifier(m)]


@dataclass
class LayerEntropy:
    """State statistics of one rectifier over a data split.

    ``p``: per-channel fraction of on-states (zeros excluded); ``channel_entropy``: H_c in bits;
    ``entropy``: H_l; ``positive``/``negative``: raw counts; ``always_off``: channels that never
    saw z > 0 (their rectified output is 0 on this data); ``always_on``: channels never negative.
    """

    name: str
    kind: str
    positive: torch.Tensor
    negative: torch.Tensor
    p: torch.Tensor
    channel_entropy: torch.Tensor
    entropy: float
    positions: int

    @property
    def channels(self) -> int:
        return int(self.p.numel())

    @property
    def constant(self) -> torch.Tensor:
        return self.channel_entropy == 0

    @property
    def always_off(self) -> torch.Tensor:
        return self.positive == 0

    @property
    def always_on(self) -> torch.Tensor:
        return (self.negative == 0) & (self.positive > 0)

    @property
    def is_linear(self) -> bool:
        """True when every channel is constant on the data: the rectifier acts linearly there."""
        return self.entropy == 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-friendly digest (no per-channel arrays)."""
        return {
            "entropy": self.entropy,
            "kind": self.kind,
            "channels": self.channels,
            "constant": int(self.constant.sum()),
            "always_off": int(self.always_off.sum()),
            "always_on": int(self.always_on.sum()),
        }


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """H(p) in bits, exactly 0 at p in {0, 1} (no NaN from 0 log 0)."""
    p = p.double()
    inner = (p > 0) & (p < 1)
    q = torch.where(inner, p, torch.full_like(p, 0.5))
    h = -(q * torch.log2(q) + (1 - q) * torch.log2(1 - q))
    return torch.where(inner, h, torch.zeros_like(h))


def layer_entropy_from_counts(name: str, kind: str, positive: torch.Tensor, negative: torch.Tensor, positions: int) -> LayerEntropy:
    positive = positive.long()
    negative = negative.long()
    seen = positive + negative
    p = torch.where(seen > 0, positive.double() / seen.clamp_min(1).double(), torch.zeros_like(positive, dtype=torch.float64))
    h = binary_entropy(p)
    nonconstant = h > 0
    layer_h = float(h[nonconstant].mean()) if bool(nonconstant.any()) else 0.0
    return LayerEntropy(name, kind, positive, negative, p, h, layer_h, int(positions))


class EntropyMeter:
    """Streaming sign counters hooked on the inputs of a model's rectifiers.

    Use as a context manager: hooks are installed on enter and always removed on exit.
    """

    def __init__(self, model: nn.Module, names: Sequence[str] | None = None, channel_dim: int = 1) -> None:
        self.model = model
        self.channel_dim = channel_dim
        modules = dict(find_rectifiers(model))
        if names is None:
            names = list(modules)
        missing = [n for n in names if n not in modules]
        if missing:
            raise ConfigError(f"{missing} are not rectifier modules of the model; pick names from find_rectifiers(model).")
        self.modules = {n: modules[n] for n in names}
        self.positive: dict[str, torch.Tensor] = {}
        self.negative: dict[str, torch.Tensor] = {}
        self.positions: dict[str, int] = {n: 0 for n in names}
        self.calls: dict[str, int] = {n: 0 for n in names}
        self._handles: list[Any] = []

    def __enter__(self) -> "EntropyMeter":
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_pre_hook(self._make_hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _make_hook(self, name: str):
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            z = inputs[0].detach()
            cd = self.channel_dim if self.channel_dim >= 0 else z.dim() + self.channel_dim
            if z.dim() < 2 or cd >= z.dim():
                raise ConfigError(f"rectifier {name} got an input of shape {tuple(z.shape)} with no channel dimension {self.channel_dim}; pass channel_dim.")
            zc = z.movedim(cd, 0).reshape(z.shape[cd], -1)
            pos = (zc > 0).sum(dim=1)
            neg = (zc < 0).sum(dim=1)
            if name in self.positive:
                if self.positive[name].shape != pos.shape:
                    raise ConfigError(f"rectifier {name} saw {pos.numel()} channels after {self.positive[name].numel()}; a module reused with different widths cannot be measured — give each call its own module.")
                self.positive[name] += pos.cpu()
                self.negative[name] += neg.cpu()
            else:
                self.positive[name] = pos.cpu().long()
                self.negative[name] = neg.cpu().long()
            self.positions[name] += zc.shape[1]
            self.calls[name] += 1

        return hook

    def result(self) -> dict[str, LayerEntropy]:
        out: dict[str, LayerEntropy] = {}
        for name, module in self.modules.items():
            if name not in self.positive:
                log.warning("rectifier %s was never called on the data; skipped", name)
                continue
            out[name] = layer_entropy_from_counts(name, type(module).__name__, self.positive[name], self.negative[name], self.positions[name])
        return out


def _batches(source: Any, mean: Sequence[float] | None, std: Sequence[float] | None, batch_size: int, split: str, max_samples: int | None, device: str) -> Iterable[torch.Tensor]:
    """Normalised float batches from a DataBundle, an ImageSet, or an iterable of x / (x, y)."""
    from netrazor.data.types import DataBundle, ImageSet

    if isinstance(source, DataBundle):
        mean, std = source.mean, source.std
        source = getattr(source, split, None)
        if source is None:
            raise ConfigError(f"split {split!r} does not exist; use 'train', 'val' or 'test'.")
    if isinstance(source, ImageSet):
        n = len(source) if max_samples is None else min(len(source), int(max_samples))
        if n == 0:
            raise DataError("the data split for the entropy measurement is empty; pass a non-empty split.")
        m = torch.tensor(list(mean) if mean else [0.0] * source.images.shape[1]).view(1, -1, 1, 1)
        s = torch.tensor(list(std) if std else [1.0] * source.images.shape[1]).view(1, -1, 1, 1)
        for i in range(0, n, batch_size):
            x = source.images[i : min(n, i + batch_size)].float().div(255)
            yield ((x - m) / s).to(device)
        return
    seen = 0
    for item in source:
        x = item[0] if isinstance(item, (tuple, list)) else item
        if max_samples is not None:
            if seen >= max_samples:
                break
            x = x[: max_samples - seen]
        seen += len(x)
        yield x.to(device)


@torch.no_grad()
def rectifier_entropy(
    model: nn.Module,
    data: Any,
    *,
    split: str = "train",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 256,
    max_samples: int | None = None,
    names: Sequence[str] | None = None,
    channel_dim: int = 1,
    device: str = "cpu",
) -> dict[str, LayerEntropy]:
    """Entropy of every rectifier of ``model`` over ``data`` in one streaming pass.

    ``data``: a DataBundle (``split`` picks train/val/test; its mean/std normalise), an ImageSet
    (pass ``mean``/``std``), or any iterable of input batches or ``(x, y)`` pairs (e.g. a
    BatchLoader). ``max_samples`` caps the examples used (default: the whole split). The model
    runs in eval mode (BatchNorm running statistics) and its mode is restored afterwards.
    Returns ``{rectifier name: LayerEntropy}`` in module order.
    """
    was_training = model.training
    model.eval()
    try:
        with EntropyMeter(model, names=names, channel_dim=channel_dim) as meter:
            for x in _batches(data, mean, std, batch_size, split, max_samples, device):
                model(x)
        return meter.result()
    finally:
        model.train(was_training)
