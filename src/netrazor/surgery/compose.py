"""Exact algebra of linear layers: BN folding, linear∘linear, conv∘conv, residual merges.

Pure functions on modules (no graph handling; see :mod:`netrazor.surgery.folding`). They compute
in float64 and return new float32 (the input dtype) modules, so that folding itself adds no
more rounding than one float32 cast. A composition that would not be exact raises
:class:`NotExact` with the reason; the caller decides whether that is an error.

Conv composition (2-D, dilation 1, zero padding): A (kA, stride sA, padding pA) followed by
B (kB, stride sB, padding pB). The composed kernel is kA + (kB-1)·sA with stride sA·sB and
padding pA — exact only when pB == 0: B's zero padding pads A's OUTPUT with zeros, whereas a
composed conv would see A's response to padded input there (bias plus partial sums). So two
3×3 convs with padding 1 (a ResNet branch) cannot be one exact 5×5 conv at the border ring;
we refuse them rather than fold approximately.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class NotExact(Exception):
    """A fold would change the outputs (the message says why)."""


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _check_plain_conv(c: nn.Module) -> None:
    if type(c) is not nn.Conv2d:
        raise NotExact(f"{type(c).__name__} is not a plain nn.Conv2d")
    if c.padding_mode != "zeros" or _pair(c.dilation) != (1, 1) or isinstance(c.padding, str):
        raise NotExact("only zero-padded, undilated convs with numeric padding are folded")


def _bias(m: nn.Module, n: int) -> torch.Tensor:
    return m.bias.detach().double() if m.bias is not None else torch.zeros(n, dtype=torch.float64)


def dense_conv_weight(c: nn.Conv2d) -> torch.Tensor:
    """The grouped weight as a dense [out, in, kh, kw] block-diagonal tensor (float64)."""
    w = c.weight.detach().double()
    if c.groups == 1:
        return w
    out, in_g = w.shape[0], w.shape[1]
    out_g = out // c.groups
    dense = torch.zeros(out, in_g * c.groups, *w.shape[2:], dtype=torch.float64)
    for g in range(c.groups):
        dense[g * out_g:(g + 1) * out_g, g * in_g:(g + 1) * in_g] = w[g * out_g:(g + 1) * out_g]
    return dense


def _new_linear(weight: torch.Tensor, bias: torch.Tensor, dtype) -> nn.Linear:
    out = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        out.weight.copy_(weight.to(dtype))
        out.bias.copy_(bias.to(dtype))
    return out


def _new_conv(weight: torch.Tensor, bias: torch.Tensor, stride, padding, dtype, groups: int = 1) -> nn.Conv2d:
    out, in_g, kh, kw = weight.shape
    conv = nn.Conv2d(in_g * groups, out, (kh, kw), stride=stride, padding=padding, groups=groups, bias=True)
    with torch.no_grad():
        conv.weight.copy_(weight.to(dtype))
        conv.bias.copy_(bias.to(dtype))
    return conv


def bn_scale_shift(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """BN in eval mode as y = x·scale + shift (float64)."""
    if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) or bn.running_mean is None:
        raise NotExact("only BatchNorm with running statistics folds (eval-mode semantics)")
    std = torch.sqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    return scale, beta - bn.running_mean.double() * scale


def fold_bn(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """``bn(layer(x))`` as one Conv2d / Linear (exact in eval mode)."""
    scale, shift = bn_scale_shift(bn)
    dtype = layer.weight.dtype
    if type(layer) is nn.Linear:
        w = layer.weight.detach().double() * scale[:, None]
        b = _bias(layer, w.shape[0]) * scale + shift
        return _new_linear(w, b, dtype)
    _check_plain_conv(layer)
    w = layer.weight.detach().double() * scale[:, None, None, None]
    b = _bias(layer, w.shape[0]) * scale + shift
    return _new_conv(w, b, layer.stride, layer.padding, dtype, groups=layer.groups)


def fold_bn_forward(bn: nn.Module, layer: nn.Module) -> nn.Module:
    """``layer(bn(x))`` as one Conv2d / Linear; a padded conv refuses (the BN shift would reach the
    zero-padded border taps, where the original sees plain zeros)."""
    scale, shift = bn_scale_shift(bn)
    dtype = layer.weight.dtype
    if type(layer) is nn.Linear:
        if layer.in_features != scale.numel():
            raise NotExact("BatchNorm1d width differs from the Linear's inputs")
        w0 = layer.weight.detach().double()
        w, b = w0 * scale[None, :], _bias(layer, w0.shape[0]) + w0 @ shift
        return _new_linear(w, b, dtype)
    _check_plain_conv(layer)
    if _pair(layer.padding) != (0, 0):
        raise NotExact("BN before a zero-padded conv: its shift is not applied to the padding")
    w0 = dense_conv_weight(layer)
    w = w0 * scale[None, :, None, None]
    b = _bias(layer, w0.shape[0]) + w0.sum(dim=(2, 3)) @ shift
    return _new_conv(w, b, layer.stride, layer.padding, dtype)


def compose_linear(a: nn.Linear, b: nn.Linear) -> nn.Linear:
    """``b(a(x))`` as one Linear. When ``a`` is a Linear subclass that transforms its input first
    (the gated first layer selects input features), the result is a copy of ``a`` with the composed
    weight, so it keeps doing so; ``b`` must be a plain Linear."""
    if type(b) is not nn.Linear:
        raise NotExact(f"the second layer is a {type(b).__name__}, not a plain Linear")
    wa, wb = a.weight.detach().double(), b.weight.detach().double()
    w = wb @ wa
    bias = wb @ _bias(a, wa.shape[0]) + _bias(b, wb.shape[0])
    if type(a) is nn.Linear:
        return _new_linear(w, bias, a.weight.dtype)
    out = copy.deepcopy(a)
    out.weight = nn.Parameter(w.to(a.weight.dtype))
    out.bias = nn.Parameter(bias.to(a.weight.dtype))
    out.out_features = w.shape[0]
    return out


def compose_conv(a: nn.Conv2d, b: nn.Conv2d) -> nn.Conv2d:
    """``b(a(x))`` as one Conv2d with kernel kA + (kB-1)·sA; raises NotExact if B pads."""
    _check_plain_conv(a)
    _check_plain_conv(b)
    if _pair(b.padding) != (0, 0):
        raise NotExact(
            f"the second conv zero-pads its input (padding {_pair(b.padding)}): the composed conv "
            "would differ on the border ring"
        )
    wa, wb = dense_conv_weight(a), dense_conv_weight(b)
    (ka_h, ka_w), (kb_h, kb_w) = wa.shape[2:], wb.shape[2:]
    sa, sb = _pair(a.stride), _pair(b.stride)
    kh, kw = ka_h + (kb_h - 1) * sa[0], ka_w + (kb_w - 1) * sa[1]
    w = torch.zeros(wb.shape[0], wa.shape[1], kh, kw, dtype=torch.float64)
    for i in range(kb_h):  # each tap of B sees a copy of A's kernel, shifted by A's stride
        for j in range(kb_w):
            w[:, :, i * sa[0]:i * sa[0] + ka_h, j * sa[1]:j * sa[1] + ka_w] += torch.einsum(
                "oc,cikl->oikl", wb[:, :, i, j], wa)
    bias = _bias(b, wb.shape[0]) + wb.sum(dim=(2, 3)) @ _bias(a, wa.shape[0])
    stride = (sa[0] * sb[0], sa[1] * sb[1])
    return _new_conv(w, bias, stride, a.padding, a.weight.dtype)


def centre_tap(c: nn.Conv2d) -> nn.Conv2d:
    """A zero-padded k×k conv applied to a 1×1 map, as a 1×1 conv without padding.

    Output (0, 0) reads input 0·s − p + u, so the single real pixel sits under tap u = p; every
    other tap reads padding zeros. The caller must know the map is 1×1 (and the output 1×1).
    """
    _check_plain_conv(c)
    k, p = _pair(c.kernel_size), _pair(c.padding)
    if p[0] >= k[0] or p[1] >= k[1]:
        raise NotExact("padding at least the kernel size: the real pixel is read by no tap")
    w = c.weight.detach().double()[:, :, p[0]:p[0] + 1, p[1]:p[1] + 1]
    return _new_conv(w, _bias(c, w.shape[0]), 1, 0, c.weight.dtype, groups=c.groups)


def pointwise_as_linear(c: nn.Conv2d) -> nn.Linear:
    """A 1×1 conv without padding as the Linear it is on one pixel (grouped convs become dense)."""
    _check_plain_conv(c)
    if _pair(c.kernel_size) != (1, 1) or _pair(c.padding) != (0, 0):
        raise NotExact("only a 1×1 conv without padding is a Linear on a 1×1 map")
    w = dense_conv_weight(c)[:, :, 0, 0]
    return _new_linear(w, _bias(c, w.shape[0]), c.weight.dtype)


def _place(w_small: torch.Tensor, kernel: tuple[int, int], offset: tuple[int, int]) -> torch.Tensor:
    kh, kw = w_small.shape[2:]
    if offset[0] < 0 or offset[1] < 0 or offset[0] + kh > kernel[0] or offset[1] + kw > kernel[1]:
        raise NotExact("the shortcut's taps do not fit inside the branch kernel")
    full = torch.zeros(*w_small.shape[:2], *kernel, dtype=torch.float64)
    full[:, :, offset[0]:offset[0] + kh, offset[1]:offset[1] + kw] = w_small
    return full


def merge_identity(c: nn.Conv2d) -> nn.Conv2d:
    """``c(x) + x`` as one Conv2d: add a delta at the tap that reads the output's own position."""
    _check_plain_conv(c)
    k, p, s = _pair(c.kernel_size), _pair(c.padding), _pair(c.stride)
    if s != (1, 1) or c.in_channels != c.out_channels or any(2 * p[d] != k[d] - 1 for d in (0, 1)):
        raise NotExact("identity shortcut needs stride 1, in == out channels and 'same' padding")
    # With in == out every group maps its inputs to the same-numbered outputs, so output o reads
    # input o as its local input o mod (channels per group): the grouped layout is kept.
    w = c.weight.detach().double().clone()
    n, per_group = w.shape[0], w.shape[1]
    w[torch.arange(n), torch.arange(n) % per_group, p[0], p[1]] += 1.0
    return _new_conv(w, _bias(c, n), c.stride, c.padding, c.weight.dtype, groups=c.groups)


def merge_parallel(c: nn.Conv2d, d: nn.Conv2d) -> nn.Conv2d:
    """``c(x) + d(x)`` (same input) as one Conv2d with c's kernel size; d's taps must fit in c's."""
    _check_plain_conv(c)
    _check_plain_conv(d)
    if _pair(c.stride) != _pair(d.stride) or c.in_channels != d.in_channels or c.out_channels != d.out_channels:
        raise NotExact("parallel convs differ in stride or channel counts")
    kc, kd = _pair(c.kernel_size), _pair(d.kernel_size)
    if kd[0] > kc[0] or kd[1] > kc[1]:
        c, d = d, c
        kc, kd = kd, kc
    if c.groups != d.groups:
        raise NotExact("declined: parallel convs with different groups would become one dense conv")
    pc, pd = _pair(c.padding), _pair(d.padding)
    # Output j of c reads input j·s - pc + u; of d reads j·s - pd + t: so tap t sits at u = t + pc - pd.
    offset = (pc[0] - pd[0], pc[1] - pd[1])
    w = c.weight.detach().double() + _place(d.weight.detach().double(), kc, offset)
    bias = _bias(c, w.shape[0]) + _bias(d, w.shape[0])
    return _new_conv(w, bias, c.stride, c.padding, c.weight.dtype, groups=c.groups)


def conv_macs(c: nn.Conv2d, out_hw: tuple[int, int]) -> int:
    return int(c.weight.numel() * out_hw[0] * out_hw[1])


