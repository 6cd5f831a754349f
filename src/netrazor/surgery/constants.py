"""Always-off / constant units: remove them and fold their constant into the next bias.

A unit whose activated output is the same number ``v`` on every example and position (a ReLU
whose input is always <= 0 gives ``v = 0``) carries no information. Its consumers receive ``v``
on that input, which is a constant added to their pre-activation: we add it to their bias and
remove the unit physically (with everything coupled, via :mod:`netrazor.surgery.channels`).

When the fold is exact, and when it is not:
- a Linear consumer: always exact (``b += W[:, j] * v``);
- a conv consumer: exact if ``v == 0`` (nothing to fold), or if the conv has no padding
  (every output window sees the constant on all taps: ``b += v * sum(W[:, c])``). A zero-padded
  k×k conv (k > 1) sees the constant only in the interior — at the border some taps read the
  padding zeros — so a nonzero constant is refused for that channel (reported, not removed).
"Constant" is decided on the caller's data: ``max - min <= atol + rtol * |v|`` over all examples
and positions, measured at each consumer's input ([REC] the tolerances are ours; knobs below).
Always-on ReLU units (input > 0 on all data) are reported: the rectifier is linear for them.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict

import torch
from torch import nn

from netrazor.surgery.channels import _all_groups, build_graph, remove_channels
from netrazor.surgery.equivalence import as_batches, check_equivalence

log = logging.getLogger(__name__)

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _RangeRecorder:
    """Per-channel running min / max of a module's input (channel dim 1, or last for Linear)."""

    def __init__(self, dim: int):
        self.dim = dim
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None

    def __call__(self, module, args):
        x = args[0].detach()
        x = x.movedim(self.dim, 0).reshape(x.shape[self.dim], -1)
        lo, hi = x.min(dim=1).values, x.max(dim=1).values
        if self.lo is not None and self.lo.shape != lo.shape:  # module reused on other shapes
            self.lo = self.hi = lo.new_full(lo.shape, float("nan"))
            return
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)


@torch.no_grad()
def _record_ranges(model: nn.Module, names: list[str], relus: list[str], batches) -> tuple[dict, dict]:
    """Per-channel input ranges of the consumer modules ``names`` and of the rectifiers ``relus``."""
    recorders, relu_rec, handles = {}, {}, []
    for name in names:
        module = model.get_submodule(name)
        rec = _RangeRecorder(-1 if isinstance(module, nn.Linear) else 1)
        recorders[name] = rec
        handles.append(module.register_forward_pre_hook(rec))
    for name in relus:
        rec = _RangeRecorder(1)
        relu_rec[name] = rec
        handles.append(model.get_submodule(name).register_forward_pre_hook(rec))
    was = model.training
    model.eval()
    try:
        for b in batches:
            model(b)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return recorders, relu_rec


def _constant_value(rec: _RangeRecorder, idxs: list[int], atol: float, rtol: float) -> torch.Tensor | None:
    lo, hi = rec.lo[idxs], rec.hi[idxs]
    if bool(((hi - lo) <= atol + rtol * hi.abs()).all()):
        return (lo + hi) / 2
    return None


def _fold_into_bias(module: nn.Module, in_idxs: list[int], values: torch.Tensor) -> None:
    """Add the consumer's response to constant inputs ``values`` at ``in_idxs`` to its bias."""
    weight = module.weight.detach()
    if module.bias is None:
        module.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype))
    with torch.no_grad():
        if isinstance(module, nn.Linear):
            module.bias += weight[:, in_idxs] @ values
            return
        per_group_in = weight.shape[1]
        per_group_out = weight.shape[0] // module.groups
        for idx, v in zip(in_idxs, values.tolist()):
            g, local = divmod(idx, per_group_in)
            rows = slice(g * per_group_out, (g + 1) * per_group_out)
            module.bias[rows] += v * weight[rows, local].flatten(1).sum(dim=1)


def _conv_fold_refusal(module: nn.Module, values: torch.Tensor) -> str | None:
    if not isinstance(module, _CONV):
        return f"consumer {type(module).__name__} is not a Conv/Linear"
    if bool((values == 0).all()):
        return None
    padding = module.padding if isinstance(module.padding, tuple) else (module.padding,)
    if module.padding == "valid" or all(p == 0 for p in padding):
        return None
    return "nonzero constant into a zero-padded conv is exact only in the interior"


def fold_constant_channels(
    model: nn.Module,
    example_inputs,
    *,
    atol: float = 1e-6,
    rtol: float = 1e-6,
    check_rtol: float = 1e-5,
) -> tuple[nn.Module, dict]:
    """Remove units whose activated output is constant on ``example_inputs``; fold the constant.

    Returns ``(new_model, report)``; the given model is not modified. ``report`` has
    ``removed`` ({group root: [channels]}), ``values`` ({group root: [constant per channel]}),
    ``refused`` (list of {root, channel, reason}), ``always_on`` ({relu name: [channels]}) and
    ``max_rel_error`` of the equivalence check against the original (raises SurgeryError above
    ``check_rtol``). Constant-ness is judged on the examples only: give it real data.
    """
    batches = as_batches(example_inputs)
    work = copy.deepcopy(model)
    dg = build_graph(work, batches)
    groups = _all_groups(work, dg)
    consumer_names = sorted({c for g in groups for c in g.consumers})
    relus = [n for n, m in work.named_modules() if isinstance(m, nn.ReLU)]
    ranges, relu_ranges = _record_ranges(work, consumer_names, relus, batches)

    removed: dict[str, list[int]] = defaultdict(list)
    values: dict[str, list[float]] = defaultdict(list)
    refused: list[dict] = []
    folds: list[tuple[str, list[int], torch.Tensor]] = []
    for group in groups:
        for r in range(group.size):
            per_consumer, reason = [], None
            for name in group.consumers:
                idxs = group.consumer_idxs[name][r]
                rec = ranges.get(name)
                if not idxs or rec is None or rec.lo is None:
                    reason = f"consumer {name} not observed"
                    break
                v = _constant_value(rec, idxs, atol, rtol)
                if v is None:
                    reason = "not constant"
                    break
                module = work.get_submodule(name)
                if not isinstance(module, nn.Linear):
                    reason = _conv_fold_refusal(module, v)
                    if reason:
                        break
                per_consumer.append((name, idxs, v))
            if reason is None and any(bool(torch.isnan(p[2]).any()) for p in per_consumer):
                reason = "consumer reused on inputs of different shapes"
            if reason is None and not group.consumers:
                reason = "no consumers"
            if reason is None and len(removed[group.root]) + 1 >= group.size:
                reason = "last channel of the group is kept so the model stays connected"
            if reason is None:
                removed[group.root].append(r)
                values[group.root].append(float(per_consumer[0][2].mean()))
                folds.extend(per_consumer)
            elif reason != "not constant":
                refused.append({"root": group.root, "channel": r, "reason": reason})
    for name, idxs, v in folds:
        _fold_into_bias(work.get_submodule(name), idxs, v)
    removed = {k: v for k, v in removed.items() if v}
    result = remove_channels(work, removed, batches, check=False) if removed else work
    # Constant-ness is a property of the data, so the check uses the caller's data only.
    err = check_equivalence(model, result, batches, rtol=check_rtol, random_inputs=False,
                            what="fold_constant_channels")
    always_on = {}
    for name, rec in relu_ranges.items():
        if rec.lo is not None:
            on = torch.nonzero(rec.lo > 0).flatten().tolist()
            if on:
                always_on[name] = on
    report = {"removed": removed, "values": {k: v for k, v in values.items() if v}, "refused": refused,
              "always_on": always_on, "max_rel_error": err}
    log.info("fold_constant_channels: removed %d units, refused %d", sum(map(len, removed.values())), len(refused))
    return result, report


def linearise_always_on(
    model: nn.Module,
    example_inputs,
    *,
    types: tuple[type, ...] = (nn.ReLU,),
    check_rtol: float = 1e-5,
) -> tuple[nn.Module, dict]:
    """Replace rectifiers whose input is >= 0 on every example and position by ``nn.Identity``.

    Such a ReLU is the identity on the data (an "always-on" layer, entropy 0 in NEPENTHE's
    terms), so :func:`fold_linear_sections` can then fold around it. Run it after
    :func:`fold_constant_channels`, which removes the always-off channels that would otherwise
    keep a layer nonlinear. Judged on ``example_inputs`` only (give real data) and checked on
    them; a rectifier module used at several places must be non-negative at all of them.
    Returns ``(new_model, {"linearised": [names], "max_rel_error"})``; the argument is unchanged.
    """
    batches = as_batches(example_inputs)
    work = copy.deepcopy(model)
    names = [n for n, m in work.named_modules() if type(m) in types]
    _, ranges = _record_ranges(work, [], names, batches)
    linearised = []
    for name in names:
        rec = ranges[name]
        if rec.lo is not None and not bool(torch.isnan(rec.lo).any()) and bool((rec.lo >= 0).all()):
            work.set_submodule(name, nn.Identity())
            linearised.append(name)
    err = check_equivalence(model, work, batches, rtol=check_rtol, random_inputs=False,
                            what="linearise_always_on") if linearised else 0.0
    return work, {"linearised": linearised, "max_rel_error": err}
