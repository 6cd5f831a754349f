"""What NEPENTHE, EASIER and Layer Folding share: knobs, the dense baseline, the finish, the record."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from netrazor.errors import ConfigError
from netrazor.methods.entropy_depth.approx import approximate_folds
from netrazor.methods.entropy_depth.entropy import LayerEntropy, find_rectifiers, rectifier_entropy
from netrazor.methods.entropy_depth.finish import finish
from netrazor.methods.entropy_depth.measure import measure_cost, paired_latency

log = logging.getLogger(__name__)


class KnobError(ConfigError, ValueError):
    """A bad knob value: a ``ConfigError`` for the CLI, a ``ValueError`` for the recipe validator
    (``pipeline.stages.validate_stages`` builds methods from recipes and catches ValueError)."""


@dataclass
class DepthKnobs:
    """Knobs common to the three methods.

    delta            largest allowed drop of validation accuracy below the dense model (fraction,
                     0.01 = one point); the last model within delta is kept.
    rounds           most prune/linearise-retrain rounds.
    retrain_epochs   epochs of the adapter's recipe after each round.
    entropy_split    split the rectifier entropy is measured on ("train", as the paper).
    entropy_samples  cap on examples for the entropy pass (None: the whole split).
    fold             hand the result to surgery.fold_linear_sections.
    remove_dead      remove always-off channels of the remaining rectifiers (surgery.remove_channels).
    measure_latency  measure CPU latency (batch 1 and 64) before and after.
    latency_repeats  timing repeats for batch 1 (batch 64 uses a third).
    eval_test        evaluate the test split per round, for the record only (never for decisions).
    finish_samples   training examples on which surgery judges constant channels and checks folds.
    retrain_lr       learning rate of the retraining between rounds (None: the recipe's). [REC]
                     A fine-tuning rate (e.g. 0.2 x the recipe's) keeps a heavily pruned net from
                     diverging in a one-epoch cosine cycle.
    order            which rectifier EASIER linearises next: "entropy" (the paper: lowest H_l) or
                     "foldable-first" [REC] (lowest H_l among rectifiers whose linearisation lets
                     surgery remove a layer, exactly or approximately -- surgery.foldable -- then
                     the others): the accuracy budget goes where it buys latency first.
    approx_fold      "off", "lstsq" or "centre": after the rounds, replace each linearised pair of
                     zero-padded convs by one conv fitted on real activations, distil-fine-tune
                     and keep it only within delta (approx.py; surgery.approximate) [REC].
    approx_epochs    distillation epochs after each approximate fold.
    approx_lr        their learning rate (None: retrain_lr).
    approx_temperature, approx_alpha   distillation temperature and weight of the KL term.
    """

    delta: float = 0.01
    rounds: int = 10
    retrain_epochs: int = 1
    entropy_split: str = "train"
    entropy_samples: int | None = None
    fold: bool = True
    remove_dead: bool = True
    measure_latency: bool = True
    latency_repeats: int = 30
    eval_test: bool = True
    finish_samples: int = 1024
    retrain_lr: float | None = None
    order: str = "foldable-first"
    approx_fold: str = "lstsq"
    approx_epochs: int = 1
    approx_lr: float | None = None
    approx_temperature: float = 4.0
    approx_alpha: float = 0.9

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        if not 0 <= self.delta <= 1:
            raise KnobError(f"delta must be a fraction in [0, 1] (0.01 = one accuracy point), got {self.delta}.")
        if self.rounds < 0 or self.retrain_epochs < 0:
            raise KnobError("rounds and retrain_epochs must be >= 0.")
        if self.entropy_split not in ("train", "val", "test"):
            raise KnobError(f"entropy_split must be train/val/test, got {self.entropy_split!r}.")
        if self.order not in ("entropy", "foldable-first"):
            raise KnobError(f"order must be 'entropy' or 'foldable-first', got {self.order!r}.")
        if self.approx_fold not in ("off", "lstsq", "centre"):
            raise KnobError(f"approx_fold must be 'off', 'lstsq' or 'centre', got {self.approx_fold!r}.")
        if self.approx_epochs < 0 or not 0 <= self.approx_alpha <= 1:
            raise KnobError("approx_epochs must be >= 0 and approx_alpha in [0, 1].")

    def knobs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # ------------------------------------------------------------------ shared steps
    def retrain(self, model: nn.Module, adapter: Any, epochs: int, callbacks: Sequence[Any] = (), loss_fn: Any = None) -> Any:
        overrides: dict[str, Any] = {} if self.retrain_lr is None else {"lr": self.retrain_lr}
        # (Adapter.train drops a recipe warm-up that is not shorter than the retraining.)
        if loss_fn is not None:
            overrides["loss_fn"] = loss_fn
        return adapter.train(model, epochs=epochs, callbacks=list(callbacks), **overrides)

    def measure_entropy(self, model: nn.Module, adapter: Any) -> dict[str, LayerEntropy]:
        return rectifier_entropy(model, adapter.data, split=self.entropy_split, max_samples=self.entropy_samples, device=adapter.device)

    def evaluate(self, model: nn.Module, adapter: Any) -> dict[str, float]:
        out = {"val_accuracy": float(adapter.evaluate(model, "val")["accuracy"])}
        if self.eval_test:
            out["test_accuracy"] = float(adapter.evaluate(model, "test")["accuracy"])
        return out

    def finish_batches(self, adapter: Any, batch_size: int = 256) -> list:
        train = adapter.data.train
        n = min(len(train), self.finish_samples)
        return [adapter.data.normalize(train.images[i : min(n, i + batch_size)]).to(adapter.device) for i in range(0, n, batch_size)]

    def start(self, model: nn.Module, adapter: Any, method: str) -> dict[str, Any]:
        self._check()
        rects = [n for n, _ in find_rectifiers(model)]
        if not rects:
            raise ConfigError(f"{method} needs rectifiers (ReLU, ReLU6, LeakyReLU, PReLU, GELU modules); the model has none.")
        dense_eval = self.evaluate(model, adapter)
        cost = measure_cost(model, adapter.input_shape, latency=False)
        record: dict[str, Any] = {
            "method": method,
            "knobs": self.knobs(),
            "rectifiers_before": rects,
            "layers_dense": len(rects),
            "val_accuracy_dense": dense_eval["val_accuracy"],
            "val_error_dense": 1 - dense_eval["val_accuracy"],
            "rounds": [],
            "linearised": [],
            "_t0": time.perf_counter(),
            "_dense_model": copy.deepcopy(model) if self.measure_latency else None,
        }
        if "test_accuracy" in dense_eval:
            record["test_accuracy_dense"] = dense_eval["test_accuracy"]
            record["test_error_dense"] = 1 - dense_eval["test_accuracy"]
        for k, v in cost.items():
            record[f"{k}_dense"] = v
        return record

    def close(
        self,
        model: nn.Module,
        adapter: Any,
        record: dict[str, Any],
    ) -> tuple[nn.Module, dict[str, Any]]:
        """Finish (dead channels, fold), measure after, fill the record."""
        batches = self.finish_batches(adapter)
        if self.approx_fold != "off" and batches and batches[0].dim() == 4:
            floor = record["val_accuracy_dense"] - self.delta
            tried = {tuple(r["from"]) for r in record.get("approx_folds", [])}
            model, reports = approximate_folds(model, adapter, self, floor, batches, skip=tried)
            record["approx_folds"] = record.get("approx_folds", []) + reports
        linearised_model = copy.deepcopy(model)
        model, report = finish(model, batches, fold=self.fold, remove_dead=self.remove_dead)
        # Training may leave weights channels_last while folded layers are new (contiguous): hand
        # back one layout, the one a plain NCHW input uses, so no layer pays a layout conversion.
        if batches and batches[0].dim() == 4:
            model = model.to(memory_format=torch.contiguous_format)
        record["surgery"] = report
        final = self.evaluate(model, adapter)
        rects = [n for n, _ in find_rectifiers(model)]
        record["rectifiers_after"] = rects
        record["layers"] = len(rects)
        record["val_accuracy"] = final["val_accuracy"]
        record["val_error"] = 1 - final["val_accuracy"]
        if "test_accuracy" in final:
            record["test_accuracy"] = final["test_accuracy"]
            record["test_error"] = 1 - final["test_accuracy"]
        pre = measure_cost(linearised_model, adapter.input_shape, latency=False)
        record["params_before_surgery"] = pre["params"]
        if "macs" in pre:
            record["macs_before_surgery"] = pre["macs"]
        record["compress_seconds"] = time.perf_counter() - record.pop("_t0")
        dense = record.pop("_dense_model")
        record.update(measure_cost(model, adapter.input_shape, latency=False))
        if self.measure_latency and dense is not None:
            # The dense model after the same BN folding is the fair baseline of the depth gain:
            # folding BN alone already saves time, and that is not the method's doing.
            dense_folded, _ = finish(copy.deepcopy(dense), batches, fold=self.fold, remove_dead=False)
            timed = paired_latency({"_dense": dense, "_dense_folded": dense_folded, "": model}, adapter.input_shape, self.latency_repeats)
            record.update({k: v for k, v in timed.items() if not k.endswith("_dense_folded")})
            record["latency_dense_folded"] = {k: v for k, v in timed.items() if k.endswith("_dense_folded")}
        return model, record


def entropy_table(entropies: Mapping[str, LayerEntropy]) -> dict[str, float]:
    return {n: e.entropy for n, e in entropies.items()}
