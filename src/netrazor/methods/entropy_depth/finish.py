"""The step the NEPENTHE code does not take: make the shallower network physically smaller.

After the rounds, rectifiers that became ``nn.Identity`` leave runs of linear ops
(conv -> BN -> conv, linear -> linear, a residual branch that became linear). We hand the model
to ``netrazor.surgery``:
 1. ``fold_constant_channels`` on real training examples: channels whose activated output is
    constant (always-off ReLU channels give 0) are removed physically with everything coupled to
    them, the constant folded into the consumers' biases;
 2. ``fold_linear_sections``: each run of linear ops becomes fewer ops, exactly.
Each surgery pass proves itself with an output-equivalence check; we also record the largest
absolute output difference against the model the pass started from. A pass that fails (a
``SurgeryError``) is recorded and skipped: the model it got is kept, never a half-edited one.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Sequence

import torch
from torch import nn

from netrazor.errors import SurgeryError
from netrazor.surgery import fold_constant_channels, fold_linear_sections

log = logging.getLogger(__name__)


@torch.no_grad()
def max_output_diff(a: nn.Module, b: nn.Module, batches: Sequence[torch.Tensor]) -> float:
    ta, tb = a.training, b.training
    a.eval()
    b.eval()
    try:
        return max(float((a(x) - b(x)).abs().max()) for x in batches)
    finally:
        a.train(ta)
        b.train(tb)


def _jsonable(report: Any) -> Any:
    if isinstance(report, dict):
        return {str(k): _jsonable(v) for k, v in report.items()}
    if isinstance(report, (list, tuple)):
        return [_jsonable(v) for v in report]
    if isinstance(report, (str, int, float, bool)) or report is None:
        return report
    if isinstance(report, torch.Tensor):
        return report.tolist()
    if hasattr(report, "__dict__"):
        return _jsonable(vars(report))
    return str(report)


def finish(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    *,
    fold: bool = True,
    remove_dead: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Remove constant (always-off) channels, then fold linear sections; returns ``(model, report)``.

    ``batches``: real, normalised inputs (training examples: constant-ness is judged on them).
    """
    report: dict[str, Any] = {}
    model.eval()
    steps = []
    if remove_dead:
        steps.append(("constant_channels", fold_constant_channels))
    if fold:
        steps.append(("fold", fold_linear_sections))
    for key, fn in steps:
        fn_name = fn.__name__
        before = copy.deepcopy(model)
        try:
            out, step_report = fn(model, list(batches))
        except SurgeryError as exc:
            report[key] = f"failed: {exc}"
            log.warning("surgery.%s failed (%s); model kept as it was", fn_name, exc)
            model = before
            continue
        model = out
        report[key] = _jsonable(step_report)
        report[f"{key}_max_abs_diff"] = max_output_diff(before, model, batches)
    return model, report
