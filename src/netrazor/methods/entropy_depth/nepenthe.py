"""NEPENTHE (Liao et al. 2024): entropy-guided unstructured pruning that linearises whole layers.

Per round (METHODS.md §3; the budget rule is the authors' predecessor EGP code [CODE]):
 1. measure the rectifier entropy H_l on the training split (zeros excluded);
 2. every rectifier with H_l = 0 is linear: swap it for ``nn.Identity`` and stop pruning its layer;
 3. B = zeta * alive prunable weights, shared over the remaining layers by softmax of the
    irrelevance I_l = sum_k H_k m_k / (H_l m_l), capped and re-shared (see ``budget``);
 4. magnitude-prune b_l weights inside each layer (masks held during retraining);
 5. retrain ``retrain_epochs`` with the adapter's recipe; evaluate on validation;
 6. stop when validation accuracy < dense - delta, keeping the last model within delta.
    [REC] ``backtrack``: before stopping, go back to the last model within delta and retry the
    round with zeta halved, up to ``backtrack`` times (each try counts as a round, so ``rounds``
    still bounds the retraining). Halved zeta stays for the rounds after. EGP/NEPENTHE simply stop.
Then (netrazor's addition, [REC]) a last entropy pass linearises the layers that reached H_l = 0,
and ``finish`` removes always-off channels and folds the linear sections, so MACs and latency drop.

"Prunable weights" are the Conv/Linear weights feeding a rectifier (see ``graph``); the
classifier (no rectifier after it) is not pruned. [REC] The order linearise-then-prune inside a
round and the final linearisation pass are ours.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from torch import nn


from netrazor.methods.entropy_depth.budget import allocate
from netrazor.methods.entropy_depth.common import DepthKnobs, KnobError, entropy_table
from netrazor.methods.entropy_depth.entropy import find_rectifiers
from netrazor.methods.entropy_depth.graph import link_rectifiers
from netrazor.methods.entropy_depth.linearise import linearise
from netrazor.methods.entropy_depth.masks import WeightMasks
from netrazor.methods.masks import MaskKeeper

log = logging.getLogger(__name__)


@dataclass
class NepentheMethod(DepthKnobs):
    """NEPENTHE with the EGP budget. Knobs (plus those of ``DepthKnobs``):

    zeta   fraction of the alive prunable weights pruned per round (EGP default 0.5).
    eps    floor of H_l * m_l in the irrelevance denominator ([REC], see ``budget``).
    temperature  softmax temperature of the shares ([REC]; 1 = EGP, see ``budget.allocate``).
    layer_cap    largest fraction of a layer's alive weights pruned in one round ([REC]; 1 = EGP,
                 which can empty a layer: fatal in a plain net, see ``budget``).
    backtrack    retries of a round that fell below delta, each with zeta halved ([REC]; 0 = the
                 paper's plain stop).
    """

    zeta: float = 0.5
    eps: float = 1e-12
    temperature: float = 1.0
    layer_cap: float = 1.0
    backtrack: int = 2

    def _check(self) -> None:
        super()._check()
        if not 0.0 <= self.zeta <= 1.0:
            raise KnobError(f"zeta must be in [0, 1], got {self.zeta}; it is the fraction of alive weights pruned per round (EGP: 0.5).")
        if self.temperature <= 0 or self.eps <= 0:
            raise KnobError(f"temperature and eps must be > 0, got {self.temperature} and {self.eps}.")
        if not 0.0 < self.layer_cap <= 1.0:
            raise KnobError(f"layer_cap must be in (0, 1], got {self.layer_cap}; it is the largest fraction of a layer pruned per round (1 = EGP).")
        if self.backtrack < 0:
            raise KnobError(f"backtrack must be >= 0, got {self.backtrack}; it is how often a failed round is retried with zeta halved (0 = stop).")

    def run(self, model: nn.Module, adapter: Any) -> tuple[nn.Module, dict[str, Any]]:
        record = self.start(model, adapter, "nepenthe")
        links = link_rectifiers(model)
        record["feeding_layers"] = dict(links.feeding)
        record["graph_traced"] = links.traced
        feeding = {r: w for r, w in links.feeding.items() if w}
        masks = WeightMasks(model, [w for ws in feeding.values() for w in ws])
        active = [n for n, _ in find_rectifiers(model)]
        floor = record["val_accuracy_dense"] - self.delta
        best = copy.deepcopy(model)
        best_masks = copy.deepcopy(masks.masks)
        best_active = list(active)
        inexact = best_inexact = 0
        zeta, backtracks = self.zeta, 0
        for rnd in range(1, self.rounds + 1):
            ent = self.measure_entropy(model, adapter)
            now_linear = [r for r in active if r in ent and ent[r].is_linear]
            for r in now_linear:
                inexact += linearise(model, r, ent[r], links.producer.get(r))
            active = [r for r in active if r not in now_linear]
            layers = [r for r in active if r in feeding and masks.alive(feeding[r]) > 0]
            budgets: dict[str, int] = {}
            if layers:
                budgets = allocate(
                    {r: ent[r].entropy for r in layers},
                    {r: masks.mean_abs(model, feeding[r]) for r in layers},
                    {r: masks.alive(feeding[r]) for r in layers},
                    zeta=zeta,
                    eps=self.eps,
                    temperature=self.temperature,
                    layer_cap=self.layer_cap,
                )
                for r, b in budgets.items():
                    masks.prune(model, feeding[r], b)
            if not layers and not now_linear:
                log.info("round %d: nothing left to prune or linearise; stopping", rnd)
                break
            self.retrain(model, adapter, self.retrain_epochs, [MaskKeeper(model, masks.masks)])
            scores = self.evaluate(model, adapter)
            prunable_total = sum(m.numel() for m in masks.masks.values())
            entry = {
                "round": rnd,
                "entropy": entropy_table(ent),
                "linearised": now_linear,
                "pruned": budgets,
                "zeta": zeta,
                "density": masks.alive(masks.masks) / max(1, prunable_total),
                **scores,
            }
            record["rounds"].append(entry)
            log.info("nepenthe round %d: val %.4f, linearised %s, density %.3f", rnd, scores["val_accuracy"], now_linear, entry["density"])
            if scores["val_accuracy"] < floor:
                entry["accepted"] = False
                # back to the last model within delta (copies: a later failure may need it again)
                model, active, inexact = copy.deepcopy(best), list(best_active), best_inexact
                masks.masks = copy.deepcopy(best_masks)
                if backtracks < self.backtrack:
                    backtracks += 1
                    zeta /= 2
                    entry["backtrack"] = {"next_zeta": zeta}
                    log.info("round %d below delta: back to the last model within delta, zeta -> %.4f", rnd, zeta)
                    continue
                break
            entry["accepted"] = True
            record["linearised"].extend(now_linear)
            best, best_masks, best_active = copy.deepcopy(model), copy.deepcopy(masks.masks), list(active)
            best_inexact = inexact
        # Final pass: layers that reached H = 0 in the accepted model are linear already on the data.
        ent = self.measure_entropy(model, adapter)
        final_linear = [r for r in active if r in ent and ent[r].is_linear]
        if final_linear:
            trial = copy.deepcopy(model)
            for r in final_linear:
                inexact += linearise(trial, r, ent[r], links.producer.get(r))
            if self.evaluate(trial, adapter)["val_accuracy"] >= floor:
                model = trial
                record["linearised"].extend(final_linear)
                ent = self.measure_entropy(model, adapter)
        record["final_entropy"] = {n: e.summary() for n, e in ent.items()}
        record["inexact_channels"] = inexact
        record["density"] = masks.alive(masks.masks) / max(1, sum(m.numel() for m in masks.masks.values()))
        return self.close(model, adapter, record)
