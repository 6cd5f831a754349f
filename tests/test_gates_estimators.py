"""θ-gradient estimators of the gates: unbiased on a toy multilinear function; exact flips."""

import pytest
import torch

from netrazor.errors import ConfigError
from netrazor.methods.gates import ARM, DisARM, StraightThrough, get_estimator
from netrazor.methods.gates.gate import LayerGate
from netrazor.methods.gates.sampling import GateSampling


def _toy(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, generator=g)
    b = torch.randn(n, n, generator=g).triu(1)  # pairwise terms: f is multilinear in ξ

    def f(xi):
        return xi @ a + ((xi @ b) * xi).sum(1)

    def grad(theta):
        return a + (b + b.T) @ theta

    return f, grad


@pytest.mark.parametrize("est", [DisARM(), ARM()], ids=["disarm", "arm"])
def test_antithetic_estimators_are_unbiased(est):
    torch.manual_seed(1)
    f, grad = _toy()
    theta = torch.tensor([0.05, 0.2, 0.5, 0.7, 0.9, 0.99])
    samples = 200_000
    u = torch.rand(samples, theta.numel())
    masks = est.mask(theta, u, 2)
    assert masks.shape == (2 * samples, theta.numel())
    # both copies are Bernoulli(θ) samples
    assert torch.allclose(masks[:samples].mean(0), theta, atol=0.01)
    assert torch.allclose(masks[samples:].mean(0), theta, atol=0.01)
    est_grad = est.theta_grad(theta, u, f(masks).view(2, samples))
    exact = grad(theta)
    # standard error of the mean over 200k samples is well below this tolerance
    assert torch.allclose(est_grad, exact, atol=0.06), (est_grad, exact)


def test_disarm_has_lower_variance_than_arm():
    torch.manual_seed(2)
    f, _ = _toy()
    theta = torch.full((6,), 0.3)
    u = torch.rand(20_000, 6)
    spreads = []
    for est in (DisARM(), ARM()):
        losses = f(est.mask(theta, u, 2)).view(2, -1)
        per_sample = torch.stack([est.theta_grad(theta, u[i:i + 1], losses[:, i:i + 1]) for i in range(2000)])
        spreads.append(per_sample.var(0).mean())
    assert spreads[0] < spreads[1]


def test_straight_through_passes_gradient_one():
    theta = torch.tensor([0.3, 0.8], requires_grad=True)
    xi = StraightThrough().mask(theta, torch.rand(4, 2), 1)
    assert set(xi.detach().unique().tolist()) <= {0.0, 1.0}
    xi.sum().backward()
    assert torch.equal(theta.grad, torch.full((2,), 4.0))


def test_flip_difference_is_exact_for_layer_gates():
    # f = c + w·ξ_L·x: the flip difference is w·x whatever ξ_L was sampled as
    gate = LayerGate(init=0.4)
    gate.train()
    est = {"layer": get_estimator("flip")}
    x = torch.ones(8, 3)
    sampling = GateSampling([gate], est, batch=8, copies=1)
    with sampling.active():
        with sampling.replaying(gate, 0, 1.0):
            on = (gate(x) * 2.0).sum(1)
        with sampling.replaying(gate, 0, 0.0):
            off = (gate(x) * 2.0).sum(1)
    assert torch.equal(est["layer"].from_flips(on, off), torch.tensor([6.0]))


def test_unknown_estimator_is_a_config_error():
    with pytest.raises(ConfigError, match="choose one of"):
        get_estimator("reinforce-ish")
