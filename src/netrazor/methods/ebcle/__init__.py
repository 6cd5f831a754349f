"""EBCLE (Gowdra et al., 2021; METHODS.md §1): the data set's entropy bounds the depth.

- :mod:`rules`   ``DepthRule`` interface, registry, the default [REC] rule
- :mod:`probe`   the identity probe (relative residual norm, linear CKA, effective depth)
- :mod:`cka`     linear CKA (Kornblith et al. 2019), plain and debiased
- :mod:`shape`   the broader-shallower variant of a zoo model within a bound
- :mod:`method`  ``EbcleMethod`` (methods contract: ``run(model, adapter) -> (model, record)``)
- :mod:`plot`    probe plot (matplotlib, Agg)
Entropy statistics come from :func:`netrazor.data.entropy.dataset_entropy`.
"""

from netrazor.methods.ebcle.cka import cka_from_grams, gram, linear_cka
from netrazor.methods.ebcle.method import EbcleMethod
from netrazor.methods.ebcle.plot import plot_probe
from netrazor.methods.ebcle.probe import ProbeReport, find_blocks, identity_probe, main_path_convs, probe_batch
from netrazor.methods.ebcle.rules import (
    DEFAULT_RULE,
    RULES,
    DepthRule,
    EntropyHalvingsRule,
    FixedDepthRule,
    entropy_ratio,
    get_rule,
    halvings,
    register_rule,
)
from netrazor.methods.ebcle.shape import conv_depth, shape

__all__ = [
    "DEFAULT_RULE", "RULES", "DepthRule", "EbcleMethod", "EntropyHalvingsRule", "FixedDepthRule", "ProbeReport",
    "cka_from_grams", "conv_depth", "entropy_ratio", "find_blocks", "get_rule", "gram", "halvings",
    "identity_probe", "linear_cka", "main_path_convs", "plot_probe", "probe_batch", "register_rule", "shape",
]
