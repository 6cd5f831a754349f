"""The pieces of the gate objective: expected-cost gradients, knobs, priors."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from netrazor.methods.gates import CostModel, EntropyPrior, VertexPrior, attach_gates, expected_cost, weight_prior


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(10, 6), relu1=nn.ReLU(), fc2=nn.Linear(6, 4), relu2=nn.ReLU(),
                                     fc3=nn.Linear(4, 3)))


def test_cost_gradient_of_a_unit_is_its_expected_connections():
    model = _mlp()
    gs = attach_gates(model, torch.randn(2, 10), inputs=True)
    with torch.no_grad():
        for g in gs.gate_list():
            g.theta.fill_(0.5)
    params, macs = expected_cost(gs)
    grads = torch.autograd.grad(params, [gs.gates["fc1"].theta, gs.gates["fc2"].theta])
    # a fc1 unit: 10 inputs at θ=0.5 + its bias + 4 fc2 units at θ=0.5 reading it
    assert torch.allclose(grads[0], torch.full((6,), 0.5 * 10 + 1 + 0.5 * 4))
    # a fc2 unit: 6 fc1 units at θ=0.5 + bias + 3 classifier outputs
    assert torch.allclose(grads[1], torch.full((4,), 0.5 * 6 + 1 + 3))
    assert float(macs.detach()) == pytest.approx(5 * 3 + 3 * 2 + 2 * 3)  # S_in·S_out per layer


def test_knobs_move_the_cost_between_params_macs_and_layers():
    model = _mlp()
    gs = attach_gates(model, torch.randn(2, 10))
    cm = CostModel(gs, kappa=2.0, flops_vs_params=0.0)
    cm_macs = CostModel(gs, kappa=1.0, flops_vs_params=1.0)
    with torch.no_grad():
        params, macs = expected_cost(gs)
        assert float(cm()) == pytest.approx(2.0 * float(params) / cm.params_dense)
        assert float(cm_macs()) == pytest.approx(float(macs) / cm_macs.macs_dense)
    # layer_vs_unit ν scales the cost gradient on unit gates by 2(1 − ν) and leaves the value alone
    p_half = expected_cost(gs, layer_vs_unit=0.5)[0]
    p_zero = expected_cost(gs, layer_vs_unit=0.0)[0]
    g_half = torch.autograd.grad(p_half, gs.gates["fc1"].theta)[0]
    g_zero = torch.autograd.grad(p_zero, gs.gates["fc1"].theta)[0]
    assert float(p_half.detach()) == pytest.approx(float(p_zero.detach()))  # same value,
    assert torch.allclose(g_zero, 2 * g_half)  # gradient scaled by 2(1 − ν)


@pytest.mark.parametrize("prior", [VertexPrior(strength=0.5, ramp=(0.2, 0.6)), EntropyPrior(strength=0.5, ramp=(0.2, 0.6))])
def test_hyper_priors_push_to_the_nearer_vertex_after_their_ramp(prior):
    theta = torch.tensor([0.2, 0.45, 0.55, 0.9], requires_grad=True)
    assert float(prior(theta, 0.1).detach()) == 0.0  # before the ramp
    (g,) = torch.autograd.grad(prior(theta, 0.7, torch.ones(4)), theta)
    # descent direction -g: down below 0.5, up above
    assert bool((g[:2] > 0).all()) and bool((g[2:] < 0).all())
    (g_half,) = torch.autograd.grad(prior(theta, 0.4, torch.ones(4)), theta)
    assert torch.allclose(g_half, g / 2)  # halfway up the ramp


def test_weight_prior_is_theta_weighted_squared_norm():
    model = _mlp()
    gs = attach_gates(model, torch.randn(2, 10))
    with torch.no_grad():
        gs.gates["fc1"].theta.fill_(0.5)
        gs.gates["fc2"].theta.fill_(1.0)
    w1 = model.fc1.weight.pow(2).sum() + model.fc1.bias.pow(2).sum()
    w2 = model.fc2.weight.pow(2).sum() + model.fc2.bias.pow(2).sum()
    expected = 0.1 / 2 * (0.5 * w1 + w2)
    assert float(weight_prior(gs, 0.1).detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_data_reference_counts_absolute_cost_per_training_example():
    gs = attach_gates(_mlp(), torch.randn(2, 10))
    cm = CostModel(gs, kappa=3.0, flops_vs_params=0.25, reference="data", n_train=200)
    with torch.no_grad():
        params, macs = expected_cost(gs)
        assert float(cm()) == pytest.approx(3.0 * (0.75 * float(params) + 0.25 * float(macs)) / 200)
    with pytest.raises(ValueError, match="reference"):
        CostModel(gs, reference="data")  # needs n_train


def test_log_reference_prices_a_structure_by_its_share_of_the_current_net():
    gs = attach_gates(_mlp(), torch.randn(2, 10), inputs=True)
    cm = CostModel(gs, kappa=0.5, flops_vs_params=0.25, reference="log")
    with torch.no_grad():
        for g in gs.gate_list():
            g.theta.fill_(1.0)
    assert float(cm().detach()) == pytest.approx(0.0, abs=1e-6)  # every gate on: log 1 = 0
    with torch.no_grad():
        for g in gs.gate_list():
            g.theta.fill_(0.5)
    params, macs = expected_cost(gs)
    value = cm()
    expected = 0.5 * (0.75 * torch.log(params / cm.params_dense) + 0.25 * torch.log(macs / cm.macs_dense))
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    # gradient = κ·(1−ρ)·∂E[params]/∂θ / E[params] + κ·ρ·∂E[MACs]/∂θ / E[MACs]: the pressure on a
    # unit grows as the expected net shrinks (what the linear "dense" reference lacks)
    theta = gs.gates["fc1"].theta
    (g_log,) = torch.autograd.grad(value, theta)
    gp = torch.autograd.grad(expected_cost(gs)[0], theta)[0]
    gm = torch.autograd.grad(expected_cost(gs)[1], theta)[0]
    p, m = (float(t.detach()) for t in expected_cost(gs))
    assert torch.allclose(g_log, 0.5 * (0.75 * gp / p + 0.25 * gm / m), rtol=1e-5)
    dense = CostModel(gs, kappa=0.5, flops_vs_params=0.25, reference="dense")
    (g_dense,) = torch.autograd.grad(dense(), theta)
    assert bool((g_log > g_dense).all())  # the half-size net is priced higher per unit


def test_log_reference_does_not_depend_on_the_starting_width():
    # two nets of different widths with the same expected kept structure get the same log cost
    # gradient on a kept unit: the equilibrium is a property of the final net, not of the start
    def gated(width):
        torch.manual_seed(0)
        model = nn.Sequential(OrderedDict(fc1=nn.Linear(10, width), relu1=nn.ReLU(), fc2=nn.Linear(width, 3)))
        gs = attach_gates(model, torch.randn(2, 10))
        with torch.no_grad():
            gs.gates["fc1"].theta.zero_()
            gs.gates["fc1"].theta[:4] = 1.0  # 4 units on, the rest off
        return gs

    grads = []
    for width in (8, 16):
        gs = gated(width)
        cm = CostModel(gs, kappa=1.0, flops_vs_params=0.0, reference="log")
        grads.append(torch.autograd.grad(cm(), gs.gates["fc1"].theta)[0][:4])
    assert torch.allclose(grads[0], grads[1])
