"""Attaching gates to models, removing structures physically, folding gates away."""

import importlib
from collections import OrderedDict

import pytest
import torch
from torch import nn

from netrazor.errors import ModelError
from netrazor.methods.gates import BernoulliGate, InputSelectLinear, ZeroBranch, attach_gates
from netrazor.methods.gates.cost import expected_cost


def _mlp():
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(48, 20), relu1=nn.ReLU(),
                                     fc2=nn.Linear(20, 12), act2=nn.Tanh(), fc3=nn.Linear(12, 3)))


class _Cnn(nn.Module):
    """conv-bn-relu-pool, conv-relu, functional flatten into a Linear head (any model, not the zoo)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3)
        self.fc = nn.Linear(6 * 2 * 2, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.relu(self.conv2(x))
        x = torch.flatten(x, 1)
        return self.head(torch.relu(self.fc(x)))


def _randomize_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)


def _nparams(model):
    return sum(p.numel() for p in model.parameters())


def test_mlp_gates_hidden_units_and_inputs_not_the_classifier():
    torch.manual_seed(0)
    model = _mlp()
    gs = attach_gates(model, torch.randn(2, 3, 4, 4), inputs=True)
    kinds = {n: s.kind for n, s in gs.structures.items()}
    assert kinds == {"fc1": "unit", "fc2": "unit", "fc1:input": "input"}
    assert isinstance(model.fc1, InputSelectLinear)
    # θ lives outside the model: the trainer's optimiser never sees it
    thetas = {id(t) for t in gs.thetas()}
    assert not thetas & {id(p) for p in model.parameters()}


def test_cnn_with_batchnorm_and_functional_ops():
    torch.manual_seed(0)
    model = _Cnn()
    x = torch.randn(2, 1, 8, 8)
    gs = attach_gates(model, x)
    assert {n: s.kind for n, s in gs.structures.items()} == {"conv1": "filter", "conv2": "filter", "fc": "unit"}
    assert gs.structures["conv1"].host == "bn1"  # gate after BatchNorm: a removed filter outputs exactly 0
    assert [(c.name, c.multiplicity) for c in gs.structures["conv2"].consumers] == [("fc", 4)]


def test_removal_and_folding_keep_eval_outputs_and_shrink_the_model():
    torch.manual_seed(0)
    model = _Cnn()
    _randomize_bn(model)
    x = torch.randn(16, 1, 8, 8)
    gs = attach_gates(model, x[:2])
    with torch.no_grad():
        for name, gate in gs.gates.items():
            gate.theta.copy_(torch.rand(gate.n))  # about half rounded to 0
    model.eval()
    with torch.no_grad():
        gated = model(x)
    before = _nparams(model)
    # remove some mid-way (as during training), then fold the rest
    removed = gs.prune_below(0.3)
    assert removed > 0
    with torch.no_grad():
        assert torch.allclose(model(x), gated, atol=1e-5)
    final = gs.finalize()
    with torch.no_grad():
        assert torch.allclose(final(x), gated, atol=1e-5)
    assert _nparams(final) < before
    assert not any(isinstance(m, BernoulliGate) for m in final.modules())
    assert all(not m._forward_hooks for m in final.modules())
    assert final.conv1.out_channels == final.bn1.num_features == final.conv2.in_channels
    assert final.fc.in_features == final.conv2.out_channels * 4


def test_input_gates_remove_pixels_and_fold_into_a_selecting_first_layer():
    torch.manual_seed(0)
    model = _mlp()
    x = torch.randn(5, 3, 4, 4)
    gs = attach_gates(model, x[:2], inputs=True)
    with torch.no_grad():
        gs.gates["fc1:input"].theta[:30] = 0.0
    model.eval()
    with torch.no_grad():
        gated = model(x)
    final = gs.finalize()
    assert isinstance(final.fc1, InputSelectLinear) and final.fc1.in_features == 18
    assert torch.equal(final.fc1.input_index, torch.arange(30, 48))
    with torch.no_grad():
        assert torch.allclose(final(x), gated, atol=1e-6)


def test_a_set_never_empties():
    model = _mlp()
    gs = attach_gates(model, torch.randn(2, 48))
    with torch.no_grad():
        gs.gates["fc2"].theta.zero_()
    gs.prune_below(0.01)
    assert gs.gates["fc2"].n == 1 and model.fc2.out_features == 1


def test_expected_cost_is_exact_at_the_vertices():
    model = _Cnn()
    gs = attach_gates(model, torch.randn(2, 1, 8, 8))
    params, _ = expected_cost(gs, ones=True)
    weight_params = sum(p.numel() for n, p in model.named_parameters())
    assert int(params) == weight_params  # every Linear/Conv2d/BN parameter is counted once
    with torch.no_grad():
        for gate in gs.gate_list():
            gate.theta.fill_(1.0)
        gs.gates["conv2"].theta.zero_()
        gs.gates["conv2"].theta[:3] = 1.0
        p_half, _ = expected_cost(gs)
    gs.prune_below(0.5)
    with torch.no_grad():
        p_removed, _ = expected_cost(gs, ones=True)
    assert float(p_half) == pytest.approx(float(p_removed)) == pytest.approx(_nparams(model))


def test_layer_gates_on_zoo_resnet_sections():
    from netrazor.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=4, in_channels=3, input_size=(16, 16), width_mult=0.25)
    _randomize_bn(model)
    x = torch.randn(4, 3, 16, 16)
    gs = attach_gates(model, x[:2], units=False, filters=True, layers=True)
    layers = [n for n, s in gs.structures.items() if s.kind == "layer"]
    assert len(layers) == 9
    with torch.no_grad():
        gs.gates["layer2.1.branch"].theta.zero_()
    model.eval()
    with torch.no_grad():
        gated = model(x)
    final = gs.finalize()
    assert isinstance(final.layer2[1].branch, ZeroBranch)
    with torch.no_grad():
        assert torch.allclose(final(x), gated, atol=1e-5)


def test_untraceable_or_ungateable_models_raise_model_errors():
    with pytest.raises(ModelError, match="no gateable structure"):
        attach_gates(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.randn(2, 4))


def test_pruned_zoo_model_saves_and_loads_as_data(tmp_path):
    surgery = importlib.import_module("netrazor.surgery")
    from netrazor.models import build_model

    torch.manual_seed(0)
    model = build_model("lenet300", num_classes=10, in_channels=1, input_size=(8, 8))
    x = torch.randn(4, 1, 8, 8)
    gs = attach_gates(model, x[:2], inputs=True)
    with torch.no_grad():
        gs.gates["fc1:input"].theta[::3] = 0.0
        gs.gates["fc1"].theta[:200] = 0.0
    final = gs.finalize().eval()
    surgery.save_model(final, tmp_path / "pruned")
    loaded = surgery.load_model(tmp_path / "pruned").eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x), final(x), atol=1e-6)
    assert loaded.fc1.in_features == 42 and loaded.fc1.out_features == 100
