"""Per-layer bit search, greedy allocation under a budget, and quantisation-aware fine-tuning."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from netrazor.errors import ConfigError
from netrazor.quant import QuantizationAwareCallback, allocate_bits, quantize_model, search_bits
from netrazor.quant.search import layer_bit_cost


def _mlp(seed: int = 0, density: float = 0.5) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 5))
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.3, generator=g)
                m.weight.mul_((torch.rand(m.weight.shape, generator=g) < density).float())
    return model


def _divergence_fn(teacher: nn.Module):
    """Mean squared difference of outputs on a fixed batch: lower is better, 0 for the teacher."""
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = teacher(x)

    def eval_fn(model: nn.Module) -> float:
        with torch.no_grad():
            return float(((model(x) - ref) ** 2).mean())

    return eval_fn


def test_search_bits_picks_fewest_bits_within_tolerance_per_layer():
    model = _mlp()
    eval_fn = _divergence_fn(model)
    tol = 2e-3
    single = search_bits(model, eval_fn, tol, method="kmeans", joint_fix=False)
    ev = single.evals
    assert ev["baseline"] == pytest.approx(0.0, abs=1e-12)
    for name, b in single.bits.items():
        curve = {int(k): v for k, v in ev["curves"][name].items()}
        assert curve[b] <= ev["threshold"] or b == 8
        # minimal: the next narrower width was tried and failed (or b is already 1)
        assert b == 1 or curve[b - 1] > ev["threshold"]
    assert any(b < 8 for b in single.bits.values())
    result = search_bits(model, eval_fn, tol, method="kmeans")
    ev = result.evals
    assert ev["joint"] <= ev["threshold"]  # joint_fix made the whole model fit
    assert all(result.bits[n] >= single.bits[n] for n in single.bits)
    assert ev["joint"] == pytest.approx(eval_fn(result.model))
    # the original model is untouched; the copy is quantised to the chosen widths
    assert eval_fn(model) == 0.0
    for name, b in result.bits.items():
        w = dict(result.model.named_modules())[name].weight
        assert torch.unique(w[w != 0]).numel() <= 2**b


def test_looser_tolerance_never_needs_more_bits():
    model = _mlp(seed=3)
    eval_fn = _divergence_fn(model)
    tight = search_bits(model, eval_fn, 1e-4, method="uniform", joint_fix=False)
    loose = search_bits(model, eval_fn, 1e-1, method="uniform", joint_fix=False)
    assert all(loose.bits[n] <= tight.bits[n] for n in tight.bits)
    assert sum(loose.bits.values()) < sum(tight.bits.values())


def test_allocate_bits_meets_budget_and_spares_the_sensitive_layer():
    model = _mlp(seed=4, density=1.0)
    with torch.no_grad():
        model[5].weight.mul_(1e-3)  # the last layer barely matters → it should lose bits first
    eval_fn = _divergence_fn(model)
    nnz = {"1": 64 * 48, "3": 48 * 32, "5": 32 * 5}
    full = sum(layer_bit_cost(n, 8) for n in nnz.values())
    budget = full - 5 * 32 * 6  # saving enough only requires squeezing cheap layers a little
    result = allocate_bits(model, eval_fn, budget)
    assert result.evals["total_bits"] <= budget
    assert result.bits["5"] < 8
    assert result.bits["5"] <= result.bits["1"]
    tighter = allocate_bits(model, eval_fn, sum(layer_bit_cost(n, 3) for n in nnz.values()))
    assert sum(tighter.bits.values()) < sum(result.bits.values())
    assert tighter.evals["joint"] >= result.evals["joint"]
    with pytest.raises(ConfigError):
        allocate_bits(model, eval_fn, 10)


def test_quantize_model_with_dict_leaves_other_layers_float_and_rejects_unknown():
    model = _mlp()
    res = quantize_model(model, {"1": 2}, method="uniform", per_channel=True)
    assert torch.equal(res.model[3].weight, model[3].weight)
    w = res.model[1].weight
    for row in w:
        assert torch.unique(row[row != 0]).numel() <= 4
    d = res.to_dict()
    assert d["bits"] == {"1": 2} and d["per_channel"] is True
    with pytest.raises(ConfigError):
        quantize_model(model, {"nope": 2})


def _fake_trainer(model):
    class T:
        pass

    t = T()
    t.model = model
    t.optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    return t


def test_qat_callback_straight_through_updates_float_shadow_and_keeps_zeros():
    """Drive the hooks in the Trainer's documented order (netrazor.train.callbacks)."""
    torch.manual_seed(0)
    model = _mlp(density=0.4)
    masks = {n: (dict(model.named_modules())[n].weight != 0).clone() for n in ("1", "3", "5")}
    trainer = _fake_trainer(model)
    cb = QuantizationAwareCallback(bits=2, method="kmeans")
    cb.on_train_start(trainer)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 5, (32,))
    shadow0 = cb.state_dict()["shadow"]["1"].clone()
    losses = []
    for step in range(30):
        trainer.optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        cb.on_after_backward(trainer)
        trainer.optimizer.step()
        cb.on_step_end(trainer, step, loss.item())
        losses.append(loss.item())
    cb.on_train_end(trainer)
    assert losses[-1] < losses[0]
    assert not torch.equal(cb.state_dict()["shadow"]["1"], shadow0)  # the float copy learned
    for name, mask in masks.items():
        w = dict(model.named_modules())[name].weight
        assert torch.equal(w != 0, mask)  # pruned stay pruned despite momentum and decay
        assert torch.unique(w[w != 0]).numel() <= 4  # the model holds quantised weights


def test_qat_callback_with_the_real_trainer_and_resume_state():
    train = importlib.import_module("netrazor.train")
    from netrazor.data import make_synthetic

    data = make_synthetic(n_train=256, n_val=64, n_test=64, num_classes=4, shape=(1, 8, 8), seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        model[1].weight.mul_((torch.rand_like(model[1].weight) < 0.5).float())
    mask = model[1].weight != 0
    cb = QuantizationAwareCallback(bits={"1": 3, "3": 2}, method="uniform")
    config = train.TrainConfig(epochs=2, batch_size=64, lr=0.05, schedule="constant")
    history = train.Trainer(model, data, config, callbacks=[cb]).fit()
    assert len(history) == 2
    assert torch.equal(model[1].weight != 0, mask)
    assert torch.unique(model[1].weight[mask]).numel() <= 8
    assert torch.unique(model[3].weight[model[3].weight != 0]).numel() <= 4
    result = cb.result(model)
    assert result.bits == {"1": 3, "3": 2}
    assert torch.equal(result.model[1].weight, model[1].weight)
    assert torch.equal(result.layers["1"].dequantized, model[1].weight)
    state = cb.state_dict()
    fresh = QuantizationAwareCallback(bits=1)
    fresh.load_state_dict(state)
    fresh.on_train_start(_fake_trainer(model))
    assert torch.equal(fresh.state_dict()["shadow"]["1"], state["shadow"]["1"])  # resumes from the shadow


def test_search_bits_quantises_large_biases_within_tolerance_and_keeps_small_ones_float():
    torch.manual_seed(0)
    model = _mlp(seed=5)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.bias.normal_(0, 0.3)
    eval_fn = _divergence_fn(model)
    result = search_bits(model, eval_fn, 2e-3, method="kmeans", bias_min_size=32)
    ev = result.evals
    # layers "1" (48 outputs) and "3" (32) have biases big enough; "5" (5 outputs) does not
    assert set(ev["bias_curves"]) == {"1", "3"}
    assert set(result.bias_bits) <= {"1", "3"} and result.bias_bits
    assert ev["joint"] <= ev["threshold"]
    assert ev["joint"] == pytest.approx(eval_fn(result.model))
    for name, b in result.bias_bits.items():
        bias = dict(result.model.named_modules())[name].bias
        assert torch.unique(bias[bias != 0]).numel() <= 2**b
        curve = {int(k): v for k, v in ev["bias_curves"][name].items()}
        assert curve[b] <= ev["threshold"]
        assert b == 1 or curve.get(b - 1, float("inf")) > ev["threshold"]  # fewest within tolerance
    assert torch.equal(result.model[5].bias, model[5].bias)  # too small: stays float32
    assert result.to_dict()["bias_bits"] == result.bias_bits
    none = search_bits(model, eval_fn, 2e-3, method="kmeans", bias_bits=None)
    assert none.bias_bits == {} and all(torch.equal(a.bias, b.bias) for a, b in zip(
        (m for m in none.model if isinstance(m, nn.Linear)), (m for m in model if isinstance(m, nn.Linear))))


def test_quantize_model_bias_bits_keeps_zeros_and_bounds_levels():
    model = _mlp()
    with torch.no_grad():
        model[1].bias.normal_()
        model[1].bias[::3] = 0
    res = quantize_model(model, 4, bias_bits={"1": 2})
    b = res.model[1].bias
    assert torch.equal(b == 0, model[1].bias == 0)
    assert torch.unique(b[b != 0]).numel() <= 4
    assert torch.equal(res.model[3].bias, model[3].bias)
    with pytest.raises(ConfigError):
        quantize_model(model, 4, bias_bits={"nope": 2})


def test_search_walk_survives_one_noisy_failure_and_float_rounding_of_accuracies():
    """A validation accuracy moves in steps of one image: a single failed width must not end the
    walk (patience), and 0.9892 - 0.9882 must count as a drop of 0.001, not 0.0010000000000000009."""
    model = _mlp()
    names = list(dict((n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)))
    first = dict(model.named_modules())[names[0]]
    original = first.weight.detach().clone()
    # eval = a scripted accuracy drop, keyed by how many distinct levels the first layer holds
    drops = {256: 0.0, 128: 0.0, 64: 0.0, 32: 0.9892 - 0.9882, 16: 0.0, 8: 0.0, 4: 0.9892 - 0.9862, 2: 0.9892 - 0.9852}

    def eval_fn(m):
        w = dict(m.named_modules())[names[0]].weight
        if torch.equal(w, original):
            return 0.0
        levels = torch.unique(w[w != 0]).numel()
        return drops[min(k for k in drops if levels <= k)]

    patient = search_bits(model, eval_fn, 0.001, bits=(8, 7, 6, 5, 4, 3, 2, 1), joint_fix=False, bias_bits=None)
    assert patient.bits[names[0]] == 3  # 5 bits "failed" by float rounding only; 4 and 3 pass; 2 and 1 fail
    strict = search_bits(model, eval_fn, 0.0009, joint_fix=False, bias_bits=None, patience=0)
    assert strict.bits[names[0]] == 6  # 5 bits fails (0.001 > 0.0009) and the walk stops there
    assert set(strict.evals["curves"][names[0]]) == {"8", "7", "6", "5"}
