"""EASIER (Quétu, Liao, Tartaglione 2024) as an option of the same machinery.

No weight pruning: each round measures the rectifier entropy, linearises the single
still-nonlinear rectifier with the lowest H_l (``nn.Identity``; always-off channels zeroed first,
see ``linearise``), retrains ``retrain_epochs``, and stops when validation accuracy falls more than
``delta`` below dense, keeping the last model within delta. [REC] Ties go to the earlier layer;
the entropy split and the retraining recipe are shared with NEPENTHE so the two compare on the
same footing.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

from netrazor.methods.entropy_depth.common import DepthKnobs, entropy_table
from netrazor.methods.entropy_depth.entropy import find_rectifiers
from netrazor.methods.entropy_depth.graph import link_rectifiers
from netrazor.methods.entropy_depth.linearise import linearise

log = logging.getLogger(__name__)


@dataclass
class EasierMethod(DepthKnobs):
    """EASIER: one rectifier linearised per round, lowest entropy first. ``rounds`` caps the count."""

    rounds: int = 100

    def run(self, model: nn.Module, adapter: Any) -> tuple[nn.Module, dict[str, Any]]:
        record = self.start(model, adapter, "easier")
        links = link_rectifiers(model)
        floor = record["val_accuracy_dense"] - self.delta
        best = copy.deepcopy(model)
        inexact = 0
        ent = None
        for rnd in range(1, self.rounds + 1):
            ent = self.measure_entropy(model, adapter)
            active = [n for n, _ in find_rectifiers(model) if n in ent]
            if not active:
                break
            target = min(active, key=lambda n: (ent[n].entropy, active.index(n)))
            inexact += linearise(model, target, ent[target], links.producer.get(target))
            self.retrain(model, adapter, self.retrain_epochs)
            scores = self.evaluate(model, adapter)
            entry = {"round": rnd, "entropy": entropy_table(ent), "linearised": [target], **scores}
            record["rounds"].append(entry)
            log.info("easier round %d: linearised %s (H=%.4f), val %.4f", rnd, target, ent[target].entropy, scores["val_accuracy"])
            if scores["val_accuracy"] < floor:
                entry["accepted"] = False
                model = best
                break
            entry["accepted"] = True
            record["linearised"].append(target)
            best = copy.deepcopy(model)
        ent = self.measure_entropy(model, adapter) if find_rectifiers(model) else {}
        record["final_entropy"] = {n: e.summary() for n, e in ent.items()}
        record["inexact_channels"] = inexact
        return self.close(model, adapter, record)
