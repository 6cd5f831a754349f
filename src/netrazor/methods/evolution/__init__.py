"""Directed-evolution sparsification against a teacher (METHODS.md §4).

Public API: ``EvolutionMethod`` (the method), ``measure_throughput`` (vectorised vs looped
candidate evaluation), ``plot_divergence_vs_density``; building blocks in the submodules.
"""

from netrazor.methods.evolution.method import EvolutionMethod

__all__ = ["EvolutionMethod"]
