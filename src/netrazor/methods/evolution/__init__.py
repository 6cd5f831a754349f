"""Directed-evolution sparsification against a teacher (METHODS.md §4, docs/methods/evolution.md).

Public API: ``EvolutionMethod`` (the method), ``measure_throughput`` (vectorised vs looped
candidate evaluation), ``plot_divergence_vs_density``; building blocks in the submodules
(``targets``, ``genetics``, ``fitness``, ``delta`` — the default evaluator —, ``workers``,
``suffix``, ``saliency``, ``divergence``); the masks and
their ``MaskKeeper`` callback are the shared ones of ``netrazor.methods.masks``.
"""

from netrazor.methods.evolution.divergence import DIVERGENCES, kl_divergence
from netrazor.methods.evolution.method import EvolutionMethod
from netrazor.methods.evolution.plot import plot_divergence_vs_density
from netrazor.methods.evolution.targets import density_targets, keep_counts
from netrazor.methods.evolution.throughput import measure_throughput
from netrazor.methods.masks import MaskKeeper

__all__ = ["DIVERGENCES", "EvolutionMethod", "MaskKeeper", "density_targets", "keep_counts", "kl_divergence",
           "measure_throughput", "plot_divergence_vs_density"]
