"""Approximate folding: a linearised pair of zero-padded convs replaced by ONE conv, fitted to data.

Two k×k convs with padding (conv A → [BN] → identity → conv B, the rectifier between them made
linear) are not one exact conv: B's padding zeroes a border ring that a composed kernel would fill
(:mod:`netrazor.surgery.compose`), and even the exact composition (a (2k−1)² kernel) costs more
MACs than the pair when widths are equal (25·C² vs 18·C² for 3×3). Folding the pair into one conv
of B's kernel size with the OUTER widths (A's inputs, B's outputs) removes a whole layer's MACs,
but it is an approximation — unlike every other surgery pass it does NOT prove equivalence. It
reports how far the fit is (``fit_rel_error``) and leaves the decision to the caller, who must
fine-tune and validate (``netrazor.methods.entropy_depth`` does: distillation fine-tune, then the
validation δ rule, refused with the reason otherwise).

How the new conv is initialised (knob ``init``):
- ``"lstsq"`` (default): least squares on real activations — X = A's input, Y = B's output on the
  given batches (eval mode), W = argmin ||unfold(X)·W − Y||² + ridge·||W||², solved in float64 from
  streamed normal equations (Cin·k² + 1 unknowns per output channel). [REC] ``ridge`` is relative
  to the mean diagonal of the Gram matrix (1e-4).
- ``"centre"``: the centre k×k of the exact composition (B's padding ignored). Cheaper, worse.

The module tree is kept (so zoo checkpoints still describe it): A's slot receives the new conv,
A's BatchNorm (if any) and B become ``nn.Identity``; B's BatchNorm, if any, stays after the new
conv and keeps normalising its output (useful for the fine-tune).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from netrazor.errors import SurgeryError
from netrazor.surgery import compose
from netrazor.surgery.compose import NotExact
from netrazor.surgery.equivalence import as_batches

log = logging.getLogger(__name__)

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_PASS = (nn.Identity, nn.Dropout)
INITS = ("lstsq", "centre")


@dataclass
class ConvPair:
    """conv ``first`` → optional BN ``first_bn`` → identities ``middle`` → conv ``second``.

    ``macs_saved``: MACs per example removed by replacing the pair with one conv of ``second``'s
    kernel (from the example input's shapes). ``rectifiers``: the linearised slots in ``middle``.
    """

    first: str
    second: str
    first_bn: str | None = None
    middle: list[str] = field(default_factory=list)
    macs_pair: int = 0
    macs_folded: int = 0

    @property
    def macs_saved(self) -> int:
        return self.macs_pair - self.macs_folded


def _plain(c: nn.Module) -> bool:
    try:
        compose._check_plain_conv(c)
    except NotExact:
        return False
    return True


def _out_hw(node: fx.Node) -> tuple[int, int] | None:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return (int(shape[2]), int(shape[3])) if shape is not None and len(shape) == 4 else None


def approximate_pairs(model: nn.Module, example_input) -> list[ConvPair]:
    """Linearised padded conv pairs that exact folding refuses and one conv could replace.

    Largest ``macs_saved`` first. A pair qualifies when both convs are plain ``nn.Conv2d`` (zero
    padding, dilation 1) called once, only BN / Identity / Dropout sit between them, nothing else
    reads A's or the BN's output, B pads (an unpadded B folds exactly) and B's input map is
    larger than 1×1 (at 1×1 the exact centre-tap rule applies).
    """
    from torch.fx.passes.shape_prop import ShapeProp

    from netrazor.surgery.folding import trace

    batches = as_batches(example_input)
    gm = trace(copy.deepcopy(model).eval())
    ShapeProp(gm).propagate(batches[0][:1])
    mods = dict(gm.named_modules())
    uses: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            uses[n.target] = uses.get(n.target, 0) + 1
    pairs: list[ConvPair] = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods[node.target], nn.Conv2d):
            continue
        a = mods[node.target]
        if uses[node.target] != 1 or not _plain(a):
            continue
        cur, bn, middle = node, None, []
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            if nxt.op != "call_module" or uses.get(nxt.target, 0) != 1:
                break
            m = mods[nxt.target]
            if isinstance(m, _BN) and bn is None and not middle and m.running_mean is not None:
                bn = nxt.target
            elif isinstance(m, _PASS):
                middle.append(nxt.target)
            elif isinstance(m, nn.Conv2d):
                b_hw, in_hw, a_hw = _out_hw(nxt), _out_hw(cur), _out_hw(node)
                x_node = node.args[0]
                if (_plain(m) and compose._pair(m.padding) != (0, 0) and in_hw is not None and in_hw != (1, 1)
                        and b_hw is not None and a_hw is not None and isinstance(x_node, fx.Node)):
                    pair = ConvPair(node.target, nxt.target, bn, middle)
                    pair.macs_pair = a.weight.numel() * a_hw[0] * a_hw[1] + m.weight.numel() * b_hw[0] * b_hw[1]
                    pair.macs_folded = a.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1] * b_hw[0] * b_hw[1]
                    if pair.macs_saved > 0:
                        pairs.append(pair)
                break
            else:
                break
            cur = nxt
    return sorted(pairs, key=lambda p: -p.macs_saved)


def _folded_geometry(a: nn.Conv2d, b: nn.Conv2d) -> dict:
    sa, sb = compose._pair(a.stride), compose._pair(b.stride)
    return dict(kernel_size=tuple(b.kernel_size), stride=(sa[0] * sb[0], sa[1] * sb[1]), padding=compose._pair(b.padding))


@torch.no_grad()
def _centre_init(a: nn.Conv2d, bn: nn.Module | None, b: nn.Conv2d, new: nn.Conv2d) -> None:
    if bn is not None:
        a = compose.fold_bn(a, bn)
    b0 = copy.deepcopy(b)
    b0.padding = (0, 0)  # composition as if B did not pad: exact in the interior
    full = compose.compose_conv(a, b0)
    kh, kw = new.kernel_size
    oh, ow = (full.kernel_size[0] - kh) // 2, (full.kernel_size[1] - kw) // 2
    new.weight.copy_(full.weight[:, :, oh:oh + kh, ow:ow + kw])
    new.bias.copy_(full.bias)


@torch.no_grad()
def _collect(model: nn.Module, first: str, second: str, batches: Sequence[torch.Tensor]):
    """Yield (A's input, B's output) per batch, in eval mode."""
    got: dict[str, torch.Tensor] = {}
    h1 = model.get_submodule(first).register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0].detach()))
    h2 = model.get_submodule(second).register_forward_hook(lambda m, a, o: got.__setitem__("y", o.detach()))
    try:
        for batch in batches:
            model(batch)
            yield got["x"], got["y"]
    finally:
        h1.remove()
        h2.remove()


@torch.no_grad()
def _lstsq_init(model: nn.Module, pair: ConvPair, batches, new: nn.Conv2d, ridge: float) -> None:
    k, s, p = new.kernel_size, new.stride, new.padding
    d = new.in_channels * k[0] * k[1] + 1
    gram = torch.zeros(d, d, dtype=torch.float64)
    cross = torch.zeros(d, new.out_channels, dtype=torch.float64)
    for x, y in _collect(model, pair.first, pair.second, batches):
        cols = F.unfold(x.double(), k, padding=p, stride=s)  # [N, Cin·k², L]
        if cols.shape[-1] != y.shape[2] * y.shape[3]:
            raise SurgeryError(f"the folded conv would not give {pair.second}'s output size; this pair cannot be approximated")
        rows = torch.cat([cols.transpose(1, 2).reshape(-1, d - 1), torch.ones(cols.shape[0] * cols.shape[2], 1, dtype=torch.float64)], 1)
        target = y.double().flatten(2).transpose(1, 2).reshape(-1, y.shape[1])
        gram += rows.T @ rows
        cross += rows.T @ target
    reg = ridge * gram.diagonal()[:-1].mean().clamp_min(1e-12)
    gram[torch.arange(d - 1), torch.arange(d - 1)] += reg
    sol = torch.linalg.solve(gram, cross)  # [d, out]
    new.weight.copy_(sol[:-1].T.reshape(new.weight.shape).to(new.weight.dtype))
    new.bias.copy_(sol[-1].to(new.bias.dtype))


@torch.no_grad()
def _fit_error(model: nn.Module, folded: nn.Module, pair: ConvPair, batches) -> float:
    """Relative squared error of B's output, folded vs original: Σ(y' − y)² / Σ(y − ȳ)²."""
    num = den = 0.0
    outs = [y for _, y in _collect(model, pair.first, pair.second, batches)]
    tail = pair.first  # in the folded model A's slot produces what B produced
    got = []
    h = folded.get_submodule(tail).register_forward_hook(lambda m, a, o: got.append(o.detach()))
    try:
        for batch in batches:
            folded(batch)
    finally:
        h.remove()
    for y, z in zip(outs, got):
        num += float((z.double() - y.double()).pow(2).sum())
        den += float((y.double() - y.double().mean(dim=(0, 2, 3), keepdim=True)).pow(2).sum())
    return num / max(den, 1e-30)


def fold_pair_approximately(
    model: nn.Module,
    pair: ConvPair,
    batches,
    *,
    init: str = "lstsq",
    ridge: float = 1e-4,
) -> tuple[nn.Module, dict]:
    """Replace ``pair`` by one conv fitted on ``batches``; returns ``(new model, report)``.

    The argument is not modified. NOT exact: ``report["fit_rel_error"]`` is the relative squared
    error of B's output on ``batches``; fine-tune and validate before keeping the result.
    Knobs: ``init`` ("lstsq" | "centre"), ``ridge`` (relative Tikhonov term of the least squares).
    """
    if init not in INITS:
        raise SurgeryError(f"unknown init {init!r} for an approximate fold; use one of {', '.join(INITS)}.")
    batches = as_batches(batches)
    src = copy.deepcopy(model).eval()
    a, b = src.get_submodule(pair.first), src.get_submodule(pair.second)
    bn = src.get_submodule(pair.first_bn) if pair.first_bn else None
    geo = _folded_geometry(a, b)
    new = nn.Conv2d(a.in_channels, b.out_channels, bias=True, **geo).to(a.weight.dtype)
    if init == "centre":
        _centre_init(a, bn, b, new)
    else:
        _lstsq_init(src, pair, batches, new, ridge)
    out = copy.deepcopy(model)
    was_training = out.training
    from netrazor.surgery.activations import replace_activation

    replace_activation(out, pair.first, new)
    if pair.first_bn:
        replace_activation(out, pair.first_bn, nn.Identity())
    replace_activation(out, pair.second, nn.Identity())
    out.train(was_training)
    report = {
        "kind": "approximate-conv",
        "from": [pair.first] + ([pair.first_bn] if pair.first_bn else []) + list(pair.middle) + [pair.second],
        "into": pair.first,
        "init": init,
        "kernel": list(geo["kernel_size"]),
        "macs_pair": pair.macs_pair,
        "macs_folded": pair.macs_folded,
        "fit_rel_error": _fit_error(src, out.eval(), pair, batches),
    }
    out.train(was_training)
    log.info("approximate fold %s + %s: fit error %.4f", pair.first, pair.second, report["fit_rel_error"])
    return out, report
