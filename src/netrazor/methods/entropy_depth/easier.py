"""EASIER (Quétu, Liao, Tartaglione 2024) as an option of the same machinery.

No weight pruning: each round measures the rectifier entropy, linearises the single
still-nonlinear rectifier with the lowest H_l (``nn.Identity``; always-off channels zeroed first,
see ``linearise``; with ``order="foldable-first"`` [REC] the lowest H_l among those whose
linearisation lets surgery remove a layer, then the others),
[REC] when the chosen rectifier sits between two zero-padded convs and ``approx_fold`` is on, the
pair is folded into one fitted conv in the same round and the round's retraining distils from the
model before the round; if that round breaks δ it is retried without the fold. retrains ``retrain_epochs``, and stops when validation accuracy falls more than
``delta`` below dense, keeping the last model within delta. [REC] Ties go to the earlier layer;
the entropy split and the retraining recipe are shared with NEPENTHE so the two compare on the
same footing.

[REC] ``residual="drop"``: on a residual net a linearised branch still runs its convs (two 3×3
convs compose to a 5×5, which costs more, not less), so depth only leaves with the whole branch.
In this mode the candidates are the rectifiers inside residual branches (zoo layout: a block with
``branch`` and ``shortcut``); the branch holding the lowest-entropy one is removed
(``ZeroBranch``: the block computes ``relu(shortcut(x))``), and the rectifiers this makes the
identity are dropped (``gates.sections.drop_idle_rectifiers``; with an identity shortcut the
block's output ReLU goes too). A drop that breaks δ is rolled back and that branch is kept;
the next round tries the next candidate, until ``rounds`` rounds or no candidate is left.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

from netrazor.errors import SurgeryError
from netrazor.methods.entropy_depth.approx import distill_loss, fold_around
from netrazor.methods.entropy_depth.common import DepthKnobs, KnobError, entropy_table
from netrazor.methods.entropy_depth.entropy import find_rectifiers
from netrazor.methods.entropy_depth.graph import link_rectifiers
from netrazor.methods.ebcle.probe import is_residual_block
from netrazor.methods.entropy_depth.linearise import linearise
from netrazor.methods.gates.sections import drop_idle_rectifiers
from netrazor.methods.gates.structures import ZeroBranch
from netrazor.surgery.foldable import foldable_rectifiers

log = logging.getLogger(__name__)


@dataclass
class EasierMethod(DepthKnobs):
    """EASIER: one rectifier linearised per round, lowest entropy first. ``rounds`` caps the count."""

    rounds: int = 100
    residual: str = "linearise"
    candidates: list[str] | None = None  # rectifiers it may linearise (None: all); e.g. keep an MLP's first ReLU

    def _check(self) -> None:
        super()._check()
        if self.residual not in ("linearise", "drop"):
            raise KnobError(f"residual must be 'linearise' or 'drop', got {self.residual!r}.")
        if self.candidates is not None and (self.residual == "drop" or not self.candidates):
            raise KnobError("candidates is a non-empty list of rectifier names, for residual='linearise' "
                            f"(got {self.candidates!r} with residual={self.residual!r}).")

    def _check_candidates(self, model: nn.Module) -> None:
        known = [n for n, _ in find_rectifiers(model)]
        unknown = [n for n in self.candidates or [] if n not in known]
        if unknown:
            raise KnobError(f"candidates name unknown rectifiers {unknown}; choose among {known}.")

    def fold_tiers(self, model: nn.Module, adapter: Any, active: list[str]) -> tuple[dict[str, int], dict[str, str]]:
        """Ranks (0 first) and the fold each rectifier's linearisation allows ("exact"/"approximate").

        With ``order="foldable-first"`` rectifiers that let surgery remove a layer rank 0, the others 1;
        with ``order="entropy"`` all rank 0 (entropy alone decides).
        """
        try:
            foldable = foldable_rectifiers(model, adapter.example_input(2), active)
        except SurgeryError as exc:  # e.g. a model torch.fx cannot trace: entropy alone decides
            log.info("no fold-aware order (%s)", exc)
            foldable = {}
        if self.order != "foldable-first":
            return {n: 0 for n in active}, foldable
        return {n: 0 if n in foldable else 1 for n in active}, foldable

    def run(self, model: nn.Module, adapter: Any) -> tuple[nn.Module, dict[str, Any]]:
        if self.residual == "drop":
            return self._run_dropping_branches(model, adapter)
        record = self.start(model, adapter, "easier")
        self._check_candidates(model)
        links = link_rectifiers(model)
        floor = record["val_accuracy_dense"] - self.delta
        best = copy.deepcopy(model)
        inexact = 0
        ent = None
        no_fold: set[str] = set()  # rectifiers whose approximate fold a round refused
        record["approx_folds"] = []
        batches = self.finish_batches(adapter) if self.approx_fold != "off" else []
        for rnd in range(1, self.rounds + 1):
            ent = self.measure_entropy(model, adapter)
            active = [n for n, _ in find_rectifiers(model) if n in ent and (self.candidates is None or n in self.candidates)]
            if not active:
                break
            tier, foldable = self.fold_tiers(model, adapter, active)
            target = min(active, key=lambda n: (tier[n], ent[n].entropy, active.index(n)))
            inexact += linearise(model, target, ent[target], links.producer.get(target))
            fold_report, loss_fn = None, None
            if foldable.get(target) == "approximate" and target not in no_fold and batches and batches[0].dim() == 4:
                # fold the pair now, while the δ budget is unspent; the retraining distils from
                # the model before this round, and the round's δ check decides
                folded, fold_report = fold_around(model, target, batches, self.approx_fold)
                if folded is None and fold_report is not None:  # the fit itself failed: plain round
                    record["approx_folds"].append(fold_report)
                    no_fold.add(target)
                    fold_report = None
                elif folded is not None:
                    model = folded
                    loss_fn = distill_loss(copy.deepcopy(best), self.approx_temperature, self.approx_alpha)
                    fold_report["in_round"] = rnd
                    fold_report["val_accuracy_fit"] = float(adapter.evaluate(model, "val")["accuracy"])
            self.retrain(model, adapter, self.retrain_epochs, loss_fn=loss_fn)
            scores = self.evaluate(model, adapter)
            entry = {"round": rnd, "entropy": entropy_table(ent), "linearised": [target], "foldable": foldable.get(target),
                     "approx_fold": loss_fn is not None, **scores}
            record["rounds"].append(entry)
            log.info("easier round %d: linearised %s (H=%.4f)%s, val %.4f", rnd, target, ent[target].entropy,
                     " + approximate fold" if loss_fn is not None else "", scores["val_accuracy"])
            if fold_report is not None:
                fold_report.update(val_accuracy=scores["val_accuracy"], floor=floor, accepted=scores["val_accuracy"] >= floor)
                if not fold_report["accepted"]:
                    fold_report.setdefault("reason", f"validation accuracy {scores['val_accuracy']:.4f} after the round's "
                                           f"distillation is below dense - delta = {floor:.4f}; retried without the fold")
                record["approx_folds"].append(fold_report)
            if scores["val_accuracy"] < floor:
                entry["accepted"] = False
                model = copy.deepcopy(best)
                if loss_fn is not None:
                    no_fold.add(target)  # retry this rectifier next round, linearised without the fold
                    continue
                break
            entry["accepted"] = True
            record["linearised"].append(target)
            best = copy.deepcopy(model)
        ent = self.measure_entropy(model, adapter) if find_rectifiers(model) else {}
        record["final_entropy"] = {n: e.summary() for n, e in ent.items()}
        record["inexact_channels"] = inexact
        return self.close(model, adapter, record)

    def _run_dropping_branches(self, model: nn.Module, adapter: Any) -> tuple[nn.Module, dict[str, Any]]:
        """``residual="drop"`` (module docstring): one residual branch removed per round, lowest entropy first."""
        record = self.start(model, adapter, "easier")
        floor = record["val_accuracy_dense"] - self.delta
        best = copy.deepcopy(model)
        kept: set[str] = set()  # branches whose removal broke delta
        record["dropped_branches"] = []
        ent = None
        for rnd in range(1, self.rounds + 1):
            if ent is None:  # a rolled-back round leaves the model as it was: its entropy still holds
                ent = self.measure_entropy(model, adapter)
            candidates = {}
            for name, _ in find_rectifiers(model):
                branch = residual_branch_of(model, name)
                if name in ent and branch is not None and branch not in kept:
                    candidates[name] = branch
            if not candidates:
                break
            order = list(candidates)
            target = min(order, key=lambda n: (ent[n].entropy, order.index(n)))
            branch = candidates[target]
            model.set_submodule(branch, ZeroBranch())
            idle = drop_idle_rectifiers(model)
            self.retrain(model, adapter, self.retrain_epochs)
            scores = self.evaluate(model, adapter)
            accepted = scores["val_accuracy"] >= floor
            record["rounds"].append({"round": rnd, "entropy": entropy_table(ent), "dropped": branch, "because_of": target,
                                     "idle_rectifiers": idle, "accepted": accepted, **scores})
            log.info("easier round %d: dropped %s (%s H=%.4f), val %.4f%s", rnd, branch, target, ent[target].entropy,
                     scores["val_accuracy"], "" if accepted else f" < floor {floor:.4f}: rolled back, branch kept")
            if not accepted:
                model = copy.deepcopy(best)
                kept.add(branch)
                continue
            record["dropped_branches"].append(branch)
            record["linearised"].extend([target, *idle])
            best = copy.deepcopy(model)
            ent = None
        ent = self.measure_entropy(model, adapter) if find_rectifiers(model) else {}
        record["final_entropy"] = {n: e.summary() for n, e in ent.items()}
        record["inexact_channels"] = 0
        return self.close(model, adapter, record)


def residual_branch_of(model: nn.Module, rectifier: str) -> str | None:
    """The residual branch holding ``rectifier`` (``<block>.branch.…`` of a residual block in the zoo
    layout, ``ebcle.probe.is_residual_block``: a block without a shortcut cannot lose its branch), or None."""
    parts = rectifier.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] == "branch" and is_residual_block(model.get_submodule(".".join(parts[:i]))):
            return ".".join(parts[: i + 1])
    return None
