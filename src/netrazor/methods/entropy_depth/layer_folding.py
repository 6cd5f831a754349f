"""Layer Folding (Dror et al. 2021) as an option of the same machinery.

Every rectifier becomes a ``SlopeActivation`` f(z) = max(z,0) + alpha*min(z,0) with one learnable
alpha per layer (alpha = 0: ReLU, alpha = 1: identity). Training adds lambda * sum_l |1 - alpha_l^2|
(METHODS.md §3) through ``Callback.extra_loss``. At the end every layer with alpha >= threshold is
folded: alpha is set to 1 exactly (``nn.Identity``) and the net is fine-tuned briefly; then
surgery folds the linear sections.

[REC] choices, each a knob:
- alpha is projected onto [0, 1] after every step: |1 - alpha^2| is also minimal at alpha = -1,
  where f(z) = |z| is not linear, so the projection keeps the penalty pointing at the identity.
- d|1 - alpha^2|/d alpha = -2 alpha vanishes at alpha = 0: started exactly at 0 (pure ReLU) a
  layer only feels the penalty once the data gradient has moved its alpha above 0, and with the
  projection most layers never do (measured on the quick VGG-11 run with lambda = 0.05: 5 of 8
  slopes stayed at exactly 0 and 7 of 8 below 0.02 after 5 epochs). So ``alpha_init`` defaults to 0.01, LeakyReLU's usual slope (behaves like ReLU to
  1 %), which lets the penalty act from step one; ``alpha_init=0`` is the strict variant.
- lambda = 0.5 by default: alpha grows roughly like exp(2 lambda lr t / (1 - momentum)) under the
  penalty alone, so a few hundred steps at a fine-tuning lr of 0.01 can reach 1 where the data
  does not resist.
- Layers below the threshold are NOT turned back into ReLU (that would change the function):
  they stay ``nn.LeakyReLU(negative_slope=alpha)`` with the learned alpha (``nn.ReLU`` if alpha = 0).
- alpha is excluded from nothing: the recipe's weight decay also applies to it (it pulls
  towards ReLU, the conservative side).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netrazor.methods.entropy_depth.common import DepthKnobs, KnobError
from netrazor.methods.entropy_depth.entropy import SlopeActivation, find_rectifiers
from netrazor.methods.entropy_depth.linearise import set_module
from netrazor.train import Callback

log = logging.getLogger(__name__)


def slope_modules(model: nn.Module) -> dict[str, SlopeActivation]:
    return {n: m for n, m in model.named_modules() if isinstance(m, SlopeActivation)}


def linearity_penalty(model: nn.Module) -> torch.Tensor:
    """sum_l |1 - alpha_l^2| over the model's SlopeActivations."""
    alphas = [m.alpha for m in slope_modules(model).values()]
    if not alphas:
        return torch.zeros(())
    a = torch.stack(alphas)
    return (1 - a.pow(2)).abs().sum()


class SlopePenalty(Callback):
    """Adds lambda * sum |1 - alpha^2| to the loss and projects alpha onto [0, 1] after each step."""

    def __init__(self, weight: float) -> None:
        self.weight = float(weight)

    def extra_loss(self, trainer) -> torch.Tensor:  # noqa: ANN001
        return self.weight * linearity_penalty(trainer.model)

    @torch.no_grad()
    def on_step_end(self, trainer, step, loss) -> None:  # noqa: ANN001
        for m in slope_modules(trainer.model).values():
            m.alpha.clamp_(0.0, 1.0)


@dataclass
class LayerFoldingMethod(DepthKnobs):
    """Layer Folding. Knobs (plus ``DepthKnobs``; ``delta`` acts through ``guard``):

    penalty          lambda of lambda * sum |1 - alpha^2|.
    train_epochs     epochs trained with the penalty (None: the adapter recipe's epochs).
    threshold        alpha at or above which a layer is folded (0.9, METHODS.md).
    finetune_epochs  epochs after setting the folded slopes to 1 exactly.
    alpha_init       starting slope (0 = ReLU, default 0.01; see the module docstring).
    guard            [REC] honour ``delta`` like NEPENTHE/EASIER: fold candidates in order of
                     decreasing alpha only while validation stays within delta, and if the result
                     is still below dense - delta after fine-tuning, return the dense model
                     (``record["fallback"] = "dense"``). False: the paper's plain rule.
    """

    penalty: float = 0.5
    train_epochs: int | None = None
    threshold: float = 0.9
    finetune_epochs: int = 1
    alpha_init: float = 0.01
    guard: bool = True

    def _check(self) -> None:
        super()._check()
        if not 0 < self.threshold <= 1:
            raise KnobError(f"threshold must be in (0, 1], got {self.threshold}; alpha at or above it is folded (paper: 0.9).")
        if self.penalty < 0 or not 0 <= self.alpha_init <= 1:
            raise KnobError(f"penalty must be >= 0 and alpha_init in [0, 1], got {self.penalty} and {self.alpha_init}.")

    def run(self, model: nn.Module, adapter: Any) -> tuple[nn.Module, dict[str, Any]]:
        record = self.start(model, adapter, "layer-folding")
        dense = copy.deepcopy(model) if self.guard else None
        floor = record["val_accuracy_dense"] - self.delta
        names = [n for n, _ in find_rectifiers(model)]
        for n in names:
            set_module(model, n, SlopeActivation(self.alpha_init))
        epochs = self.train_epochs if self.train_epochs is not None else adapter.train_config.epochs
        self.retrain(model, adapter, epochs, [SlopePenalty(self.penalty)])
        alphas = {n: float(m.alpha.detach()) for n, m in slope_modules(model).items()}
        scores = self.evaluate(model, adapter)
        record["rounds"].append({"round": 1, "phase": "penalised", "alpha": alphas, **scores})
        for n, a in alphas.items():  # standard modules; alpha >= threshold become alpha = 1 below
            set_module(model, n, nn.ReLU() if a == 0.0 else nn.LeakyReLU(negative_slope=a))
        candidates = sorted((n for n, a in alphas.items() if a >= self.threshold), key=lambda n: -alphas[n])
        folded: list[str] = []
        for n in candidates:
            keep = model.get_submodule(n)
            set_module(model, n, nn.Identity())
            # [REC] guard: fold in order of decreasing alpha while validation stays within delta.
            if self.guard and float(adapter.evaluate(model, "val")["accuracy"]) < floor:
                set_module(model, n, keep)
                continue
            folded.append(n)
        if folded and self.finetune_epochs > 0:
            self.retrain(model, adapter, self.finetune_epochs)
        scores = self.evaluate(model, adapter)
        entry = {"round": 2, "phase": "folded+finetuned", "folded": folded, "refused_by_guard": [n for n in candidates if n not in folded], **scores}
        record["rounds"].append(entry)
        record["alpha"] = alphas
        record["within_delta"] = scores["val_accuracy"] >= floor
        if dense is not None and not record["within_delta"]:
            # The penalty overshot (the net became too linear to recover): as NEPENTHE and EASIER
            # do, keep the last model within delta -- here the dense one.
            log.info("layer folding ended %.4f below dense (delta %.4f); keeping the dense model", record["val_accuracy_dense"] - scores["val_accuracy"], self.delta)
            model, folded = dense, []
            record["fallback"] = "dense"
        record["linearised"] = folded
        ent = self.measure_entropy(model, adapter) if find_rectifiers(model) else {}
        record["final_entropy"] = {n: e.summary() for n, e in ent.items()}
        return self.close(model, adapter, record)
