"""Approximate folds of linearised padded conv pairs, each kept only if validation allows it.

Why: on plain convnets (VGG) a linearised rectifier between two zero-padded 3×3 convs cannot be
folded exactly (``netrazor.surgery.compose``), so linearising it saves a ReLU op and nothing else.
``netrazor.surgery.approximate.fold_pair_approximately`` replaces the pair by ONE conv of the
outer widths fitted by least squares on real activations; here each such fold is followed by a
short distillation fine-tune through the common training loop (``adapter.train`` with a
``loss_fn``; teacher = the model before the fold, ``netrazor.train.distillation_loss``) and is
accepted only if validation accuracy stays >= dense − δ. Otherwise it is refused with the reason
and the model before the fold is kept. Pairs are tried largest MAC saving first. [REC] Our
extension: neither NEPENTHE nor EASIER fold anything approximately.

Knobs (on ``DepthKnobs``): ``approx_fold`` ("off" | "lstsq" | "centre"), ``approx_epochs``,
``approx_lr`` (None: ``retrain_lr``), ``approx_temperature``, ``approx_alpha`` (weight of the
distillation term; the rest is cross-entropy on the labels).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from netrazor.errors import SurgeryError
from netrazor.surgery.approximate import approximate_pairs, fold_pair_approximately
from netrazor.train.losses import distillation_loss_fn as distill_loss  # the one implementation, under this module's name

log = logging.getLogger(__name__)


def pair_key(pair) -> tuple[str, ...]:
    """What a report's ``from`` lists for ``pair`` (to recognise pairs tried already)."""
    return tuple([pair.first] + ([pair.first_bn] if pair.first_bn else []) + list(pair.middle) + [pair.second])


def fold_around(model: nn.Module, rectifier: str, batches: list, init: str) -> tuple[nn.Module | None, dict | None]:
    """Approximately fold the padded conv pair around the just-linearised ``rectifier``.

    Used inside EASIER's rounds (the round's retraining is then the distillation fine-tune and the
    round's δ check decides). ``(None, None)`` when no such pair exists; ``(None, report)`` when the
    fit failed (report says why).
    """
    pairs = [p for p in approximate_pairs(model, batches[0]) if rectifier in p.middle]
    if not pairs:
        return None, None
    try:
        return fold_pair_approximately(model, pairs[0], batches, init=init)
    except SurgeryError as exc:
        return None, {"from": list(pair_key(pairs[0])), "accepted": False, "reason": str(exc)}


def approximate_folds(model: nn.Module, adapter: Any, knobs: Any, floor: float, batches: list,
                      skip: set | None = None) -> tuple[nn.Module, list[dict]]:
    """Try every approximate pair of ``model`` (see module docstring); returns (model, reports).

    ``skip``: pair keys (``pair_key``) already tried, e.g. refused inside EASIER's rounds.
    """
    reports: list[dict] = []
    tried: set[tuple[str, ...]] = set(skip or ())
    while True:
        pairs = [p for p in approximate_pairs(model, batches[0]) if pair_key(p) not in tried]
        if not pairs:
            break
        pair = pairs[0]
        tried.add(pair_key(pair))
        try:
            cand, rep = fold_pair_approximately(model, pair, batches, init=knobs.approx_fold)
        except SurgeryError as exc:
            reports.append({"from": list(pair_key(pair)), "accepted": False, "reason": str(exc)})
            continue
        teacher = copy.deepcopy(model)
        lr = knobs.approx_lr if knobs.approx_lr is not None else knobs.retrain_lr
        overrides: dict[str, Any] = {} if lr is None else {"lr": lr}
        rep["val_accuracy_fit"] = float(adapter.evaluate(cand, "val")["accuracy"])
        if knobs.approx_epochs > 0:
            adapter.train(cand, epochs=knobs.approx_epochs,
                          loss_fn=distill_loss(teacher, knobs.approx_temperature, knobs.approx_alpha), **overrides)
        val = float(adapter.evaluate(cand, "val")["accuracy"])
        rep["val_accuracy"] = val
        rep["floor"] = floor
        if val >= floor:
            rep["accepted"] = True
            model = cand
            log.info("approximate fold %s accepted: val %.4f >= %.4f", rep["from"], val, floor)
        else:
            rep["accepted"] = False
            rep["reason"] = (f"validation accuracy {val:.4f} after {knobs.approx_epochs} distillation epoch(s) is below "
                             f"dense - delta = {floor:.4f}; the pair is kept unfolded")
            log.info("approximate fold %s refused: %s", rep["from"], rep["reason"])
        reports.append(rep)
    return model, reports
