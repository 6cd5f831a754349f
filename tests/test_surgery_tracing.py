"""netrazor's own layers survive the fx trace that surgery and evolution's evaluators share.

The gated first layer of an MLP (``InputSelectLinear``) used to be inlined by ``torch.fx``: after a
fold it was loose ops with a graph-attribute weight, no longer a layer evolution could sparsify or
the quantiser quantise (seen on the gated LeNet-300 after EASIER folded fc2 into fc3).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from netrazor.methods.evolution.delta import DeltaFitness
from netrazor.methods.evolution.divergence import resolve_divergence
from netrazor.methods.evolution.fitness import LoopedFitness
from netrazor.methods.evolution.suffix import build_suffix
from netrazor.methods.gates import InputSelectLinear
from netrazor.surgery import fold_linear_sections, load_model, replace_activation, save_model
from netrazor.surgery.tracing import symbolic_trace


class GatedMLP(nn.Module):
    """What gates leave of an MLP with gated input pixels: 7 of 12 inputs kept."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.flatten = nn.Flatten()
        self.fc1 = InputSelectLinear(7, 9, total_inputs=12)
        self.fc1.input_index.copy_(torch.tensor([0, 2, 3, 5, 8, 9, 11]))
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(9, 6)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(self.flatten(x))))))


def test_the_gated_first_layer_is_one_module_in_the_trace():
    gm = symbolic_trace(GatedMLP().eval())
    calls = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert "fc1" in calls
    assert not [n for n in gm.graph.nodes if n.op == "get_attr" and str(n.target).startswith("fc1.")]


def _fold_with(rectifier, tmp_path):
    """Linearise ``rectifier`` of the gated MLP, fold, save and load; outputs must match the original's."""
    model = GatedMLP().eval()
    replace_activation(model, rectifier)
    x = torch.randn(16, 1, 3, 4)
    folded, report = fold_linear_sections(model, x)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    save_model(folded, tmp_path / "m", example_input=x)
    back = load_model(tmp_path / "m")
    torch.testing.assert_close(back(x), model(x), rtol=1e-5, atol=1e-5)
    return [f["from"] for f in report["folds"]], folded, back


def test_folding_a_linearised_layer_keeps_the_gated_first_layer_a_layer(tmp_path):
    folds, folded, back = _fold_with("relu2", tmp_path)
    assert folds == [["fc2", "fc3"]]
    assert isinstance(folded.get_submodule("fc1"), InputSelectLinear)
    assert isinstance(back.get_submodule("fc1"), InputSelectLinear)


def test_the_gated_first_layer_folds_with_the_next_linear_and_keeps_selecting_its_inputs(tmp_path):
    folds, folded, back = _fold_with("relu1", tmp_path)
    assert folds == [["fc1", "fc2"]]
    for first in (folded.get_submodule("fc2"), back.get_submodule("fc2")):
        assert isinstance(first, InputSelectLinear) and tuple(first.weight.shape) == (6, 7)
        assert first.input_index.tolist() == [0, 2, 3, 5, 8, 9, 11]


def test_evolution_evaluators_split_the_model_at_the_gated_layer():
    model = GatedMLP().eval()
    x = torch.randn(10, 1, 3, 4)
    assert build_suffix(model, "fc1", x).traced
    with torch.no_grad():
        teacher = model(x) + 0.3 * torch.randn(10, 4)
    div = resolve_divergence("kl", 4.0)
    g = torch.Generator().manual_seed(0)
    for layer in ("fc1", "fc2"):
        numel = model.get_submodule(layer).weight.numel()
        zs = torch.rand(5, numel, generator=g) < 0.3
        fit = DeltaFitness(copy.deepcopy(model), layer, x, teacher, div)
        assert fit.fallback is None  # the gated layer's gather reads its selected inputs (linear_input)
        torch.testing.assert_close(fit(zs), LoopedFitness(model, layer, x, teacher, div)(zs), rtol=1e-4, atol=1e-7)
