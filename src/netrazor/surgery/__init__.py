"""netrazor.surgery — physical change of a model's graph, each pass proven by an equivalence check.

- :func:`prunable_groups` / :func:`remove_channels` — coupled channel removal (Torch-Pruning DepGraph)
- :func:`fold_constant_channels` — remove constant (always-off) units, fold them into the next bias
- :func:`linearise_always_on` — rectifiers that are the identity on the data become ``nn.Identity``
- :func:`replace_activation` / :func:`fold_linear_sections` — linearise and fold sections exactly
- :func:`foldable_rectifiers` — which rectifiers, made linear, let a layer be folded away (and how)
- :func:`approximate_pairs` / :func:`fold_pair_approximately` — one fitted conv for a linearised
  pair of padded convs (NOT exact: the caller fine-tunes and validates)
- :func:`check_equivalence` — the check every pass runs (raises SurgeryError)
- :func:`save_model` / :func:`load_model` — no pickle: safetensors + architecture as JSON
- :func:`export_onnx` — ONNX export with an onnxruntime parity check
"""

from netrazor.surgery.activations import activation_names, replace_activation
from netrazor.surgery.approximate import ConvPair, approximate_pairs, fold_pair_approximately
from netrazor.surgery.channels import Group, prunable_groups, remove_channels
from netrazor.surgery.constants import fold_constant_channels, linearise_always_on
from netrazor.surgery.equivalence import check_equivalence
from netrazor.surgery.foldable import foldable_rectifiers
from netrazor.surgery.folding import fold_linear_sections
from netrazor.surgery.onnx_export import export_onnx
from netrazor.surgery.serialize import load_model, save_model

__all__ = [
    "ConvPair",
    "Group",
    "approximate_pairs",
    "fold_pair_approximately",
    "foldable_rectifiers",
    "activation_names",
    "check_equivalence",
    "export_onnx",
    "fold_constant_channels",
    "fold_linear_sections",
    "linearise_always_on",
    "prunable_groups",
    "remove_channels",
    "replace_activation",
    "save_model",
    "load_model",
]
