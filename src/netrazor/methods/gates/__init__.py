"""Parsimonious learning: Bernoulli gates on units, filters and layers, pruned during training.

Guenter & Sideris (2022, "Robust Learning of Parsimonious Deep Neural Networks") and the
follow-ups on layer pruning and complexity-aware training; METHODS.md §2 says what is theirs and
what is our reconstruction ([REC]). See docs/methods/gates.md.
"""

from netrazor.methods.gates.attach import GateSet, attach_gates
from netrazor.methods.gates.cost import CostModel, expected_cost
from netrazor.methods.gates.estimators import ARM, DisARM, Estimator, FlipDifference, StraightThrough, get_estimator
from netrazor.methods.gates.method import GatesMethod
from netrazor.methods.gates.gate import BernoulliGate, FilterGate, LayerGate, UnitGate, find_gates
from netrazor.methods.gates.objective import GateObjective
from netrazor.methods.gates.priors import EntropyPrior, VertexPrior, weight_prior
from netrazor.methods.gates.structures import InputSelectLinear, ZeroBranch, find_structures

__all__ = [
    "ARM", "BernoulliGate", "CostModel", "DisARM", "EntropyPrior", "Estimator", "FilterGate", "FlipDifference",
    "GateObjective", "GateSet", "GatesMethod", "InputSelectLinear", "LayerGate", "StraightThrough", "UnitGate", "VertexPrior",
    "ZeroBranch", "attach_gates", "expected_cost", "find_gates", "find_structures", "get_estimator", "weight_prior",
]
