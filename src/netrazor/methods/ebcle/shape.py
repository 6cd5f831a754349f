"""``shape()``: the broader, shallower variant of a zoo model within a depth bound.

EBCLE [ABS] builds "broader, yet shallower" models. Ours [REC]: cut the depth with the zoo's
``depth_mult`` (the largest multiplier whose main-path conv depth fits the bound, found by
bisection on real builds, so it works for every family that honours ``depth_mult``), then widen
with ``width_mult`` so that the parameter count (``keep="params"``) or the MACs (``keep="flops"``)
match the original's. Conv parameters scale ~ depth x width^2, so the starting guess is
``width x sqrt(L_old / L_new)``; the final multiplier is solved numerically against
``netrazor.measure.count_params`` / ``count_macs`` (bisection; channel counts are rounded, so the
match is within a few per cent, reported in ``info["rel_error"]``). ``keep="width"`` only cuts.

Two [REC] knobs beyond the abstract: ``budget`` scales the kept quantity (``keep="flops",
budget=0.5``: broader than the cut model but with half the original MACs), and ``round_to``
rounds every stage's channel count to a multiple (e.g. 8: CPU/GPU kernels favour such counts);
the width is then solved with the rounding inside, so the kept quantity still matches as
closely as the coarser grid allows. ``round_to`` needs a family with explicit ``widths`` (ResNets).

Families: CIFAR ResNets (blocks per stage; explicit ``blocks``/``widths`` lists are scaled too),
VGG (convs per stage), MobileNetV2. LeNets have a fixed depth (``depth_mult`` is a no-op there):
they come back unchanged with ``info["within_bound"]`` telling whether they fit.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

from torch import nn

from netrazor.errors import ConfigError
from netrazor.measure import count_macs, count_params
from netrazor.methods.ebcle.probe import main_path_convs
from netrazor.models import build_model
from netrazor.models._common import scale_width

log = logging.getLogger(__name__)

KEEPS = ("params", "flops", "width")


def conv_depth(model: nn.Module) -> int:
    """Main-path conv layers (the unit of the depth rules)."""
    return len(main_path_convs(model))


def _input_shape(model: nn.Module) -> tuple[int, int, int]:
    kw = model.netrazor_spec["kwargs"]
    h, w = kw["input_size"]
    return int(kw["in_channels"]), int(h), int(w)


def round_channels(channels: int, multiple: int) -> int:
    """The multiple of ``multiple`` nearest to ``channels`` (at least one multiple)."""
    return max(multiple, multiple * int(math.floor(channels / multiple + 0.5)))


def stage_widths(model: nn.Module) -> list[int]:
    """Output channels of each stage (``layer1``, ``layer2``, … as the zoo's ResNets name them)."""
    widths, index = [], 1
    while hasattr(model, f"layer{index}"):
        convs = [m for n, m in getattr(model, f"layer{index}").named_modules()
                 if isinstance(m, nn.Conv2d) and "shortcut" not in n]
        widths.append(convs[-1].out_channels)
        index += 1
    return widths


def _variant(name: str, base_kw: dict, depth: float, width: float, round_to: int = 1) -> nn.Module:
    """Build ``name`` with depth and width scaled *relative* to ``base_kw``, channel counts rounded
    to multiples of ``round_to`` (written as an explicit ``widths`` list)."""
    model = _scaled(name, base_kw, depth, width)
    if round_to == 1:
        return model
    kw = dict(model.netrazor_spec["kwargs"])
    kw["widths"] = [round_channels(c, round_to) for c in stage_widths(model)]
    return build_model(name, **kw)


def _scaled(name: str, base_kw: dict, depth: float, width: float) -> nn.Module:
    kw = dict(base_kw)
    if kw.get("blocks") is not None:  # explicit per-stage lists: multipliers do not apply to them
        kw["blocks"] = [max(1, int(math.ceil(b * depth - 1e-9))) for b in kw["blocks"]]
    else:
        kw["depth_mult"] = float(kw.get("depth_mult", 1.0)) * depth
    if kw.get("widths") is not None:
        kw["widths"] = [scale_width(c, width) for c in kw["widths"]]
    else:
        kw["width_mult"] = float(kw.get("width_mult", 1.0)) * width
    return build_model(name, **kw)


def _largest_depth(name: str, base_kw: dict, max_depth: int) -> tuple[float, nn.Module]:
    """The largest relative depth multiplier whose model has at most ``max_depth`` main-path convs
    (or the shallowest the family allows when none fits)."""
    lo, hi = 1e-3, 1.0
    lo_model = _variant(name, base_kw, lo, 1.0)
    if conv_depth(lo_model) > max_depth:
        return lo, lo_model
    for _ in range(30):  # depth is a nondecreasing step function of the multiplier
        mid = (lo + hi) / 2
        if conv_depth(_variant(name, base_kw, mid, 1.0)) <= max_depth:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-4:
            break
    return lo, _variant(name, base_kw, lo, 1.0)


def _solve_width(build: Callable[[float], nn.Module], measure: Callable[[nn.Module], int], target: int,
                 guess: float) -> tuple[float, nn.Module, int]:
    """Width multiplier whose measured size is closest to ``target`` (bisection on a monotone
    step function, then the better side of the step)."""
    lo, hi = guess / 2, guess * 2
    while measure(build(lo)) > target and lo > 1e-3:
        lo /= 2
    while measure(build(hi)) < target and hi < 1e3:
        hi *= 2
    for _ in range(40):
        mid = (lo + hi) / 2
        if measure(build(mid)) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-4 * hi:
            break
    best = None
    for w in (lo, hi):
        model = build(w)
        size = measure(model)
        if best is None or abs(size - target) < abs(best[2] - target):
            best = (w, model, size)
    return best


def check_shape_knobs(keep: str, budget: float = 1.0, round_to: int = 1) -> None:
    """Raise ``ConfigError`` for a bad ``keep`` / ``budget`` / ``round_to`` (shared by ``shape()`` and
    ``EbcleMethod``, which checks them before any training)."""
    if keep not in KEEPS:
        raise ConfigError(f"unknown keep={keep!r}; choose one of {', '.join(KEEPS)}.")
    if not isinstance(round_to, int) or isinstance(round_to, bool) or round_to < 1:
        raise ConfigError(f"round_to must be an int >= 1 (channel multiple), got {round_to!r}.")
    if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not budget > 0:
        raise ConfigError(f"budget must be a number > 0 (fraction of the kept quantity), got {budget!r}.")
    if budget != 1.0 and keep == "width":
        raise ConfigError("budget applies to keep='params' or 'flops'; keep='width' keeps the widths.")


def shape(model_name: str, max_depth: int, keep: str = "params", *, budget: float = 1.0, round_to: int = 1,
          **build_kw: Any) -> tuple[nn.Module, dict]:
    """The broader-shallower variant of zoo model ``model_name`` (built with ``build_kw``, e.g.
    ``num_classes``, ``in_channels``, ``input_size``, ``width_mult``, ``depth_mult``) whose main-path
    conv depth is at most ``max_depth``. Returns ``(model, info)``; ``info`` holds the chosen
    multipliers (relative to ``build_kw`` and absolute), depth, params and MACs of both models,
    the target and the relative error of the kept quantity. ``budget`` (keep params/flops) is the
    fraction of the original's quantity to keep; ``round_to`` the channel multiple (1 = none)."""
    check_shape_knobs(keep, budget, round_to)
    if not isinstance(max_depth, int) or isinstance(max_depth, bool) or max_depth < 1:
        raise ConfigError(f"max_depth must be an int >= 1 (main-path conv layers), got {max_depth!r}.")
    original = build_model(model_name, **build_kw)
    base_kw = dict(original.netrazor_spec["kwargs"])
    name = original.netrazor_spec["name"]
    shape_in = _input_shape(original)
    depth0 = conv_depth(original)
    params0 = count_params(original)
    macs0 = count_macs(original, shape_in)
    if round_to > 1 and not stage_widths(original):
        raise ConfigError(f"round_to needs a family with explicit stage widths (the ResNets); {name} has none.")
    info: dict[str, Any] = {
        "model": name, "keep": keep, "bound": max_depth, "budget": budget, "round_to": round_to,
        "layers_original": depth0, "params_original": params0, "macs_original": macs0,
    }
    if depth0 <= max_depth:
        d, cut = 1.0, original
    else:
        d, cut = _largest_depth(name, base_kw, max_depth)
    depth1 = conv_depth(cut)
    info["within_bound"] = depth1 <= max_depth
    if depth1 == depth0:
        # Nothing to cut (already within the bound, or a fixed-depth family): keep the model.
        model, w = original, 1.0
        if depth0 > max_depth:
            log.warning("%s cannot be made shallower than %d conv layers (bound %d)", name, depth0, max_depth)
    elif keep == "width":
        model, w = _variant(name, base_kw, d, 1.0, round_to), 1.0
    else:
        if keep == "params":
            measure, target = count_params, round(budget * params0)
        else:
            measure, target = (lambda m: count_macs(m, shape_in)), round(budget * macs0)
        guess = math.sqrt(budget * depth0 / max(1, depth1))
        w, model, _ = _solve_width(lambda w: _variant(name, base_kw, d, w, round_to), measure, target, guess)
    params1, macs1 = count_params(model), count_macs(model, shape_in)
    kw1 = model.netrazor_spec["kwargs"]
    target_key = {"params": ("params", budget * params0, params1), "flops": ("macs", budget * macs0, macs1)}.get(keep)
    info.update(
        layers=conv_depth(model), params=params1, macs=macs1,
        depth_mult_rel=d if model is not original else 1.0, width_mult_rel=w,
        depth_mult=kw1.get("depth_mult"), width_mult=kw1.get("width_mult"),
        blocks=kw1.get("blocks"), widths=kw1.get("widths"),
        rel_error=(target_key[2] - target_key[1]) / target_key[1] if target_key else None,
    )
    return model, info
