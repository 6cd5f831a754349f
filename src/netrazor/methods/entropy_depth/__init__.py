"""Depth reduction guided by rectifier entropy: NEPENTHE, EASIER and Layer Folding.

Read ``docs/methods/nepenthe.md``. Pieces, one job each: ``entropy`` (streaming per-channel state
entropy of every rectifier), ``plot``, ``graph`` (which layer feeds which rectifier), ``budget``
(EGP's irrelevance/softmax/capping rule), ``masks`` (magnitude masks kept while retraining),
``linearise`` (rectifier -> Identity), ``finish`` (dead channels out, linear sections folded),
and the three methods. ``METHODS`` maps CLI names to classes.
"""

from netrazor.methods.entropy_depth.budget import allocate, irrelevance, share_budget
from netrazor.methods.entropy_depth.easier import EasierMethod
from netrazor.methods.entropy_depth.entropy import (
    EntropyMeter,
    LayerEntropy,
    SlopeActivation,
    binary_entropy,
    find_rectifiers,
    rectifier_entropy,
)
from netrazor.methods.entropy_depth.graph import link_rectifiers
from netrazor.methods.entropy_depth.layer_folding import LayerFoldingMethod, linearity_penalty
from netrazor.methods.entropy_depth.linearise import linearise
from netrazor.methods.entropy_depth.nepenthe import NepentheMethod
from netrazor.methods.entropy_depth.plot import plot_entropy

METHODS = {
    "nepenthe": NepentheMethod,
    "easier": EasierMethod,
    "layer-folding": LayerFoldingMethod,
}

__all__ = [
    "METHODS",
    "EasierMethod",
    "EntropyMeter",
    "LayerEntropy",
    "LayerFoldingMethod",
    "NepentheMethod",
    "SlopeActivation",
    "allocate",
    "binary_entropy",
    "find_rectifiers",
    "irrelevance",
    "link_rectifiers",
    "linearise",
    "linearity_penalty",
    "plot_entropy",
    "rectifier_entropy",
    "share_budget",
]
