"""The hot loop: vectorised candidate evaluation must give the looped (one forward per candidate)
fitness values, on plain, residual/BN and untraceable models."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netrazor.methods.evolution.divergence import kl_divergence, resolve_divergence
from netrazor.methods.evolution.fitness import LoopedFitness, VectorisedFitness, candidate_weights
from netrazor.methods.evolution.suffix import build_suffix
from test_evolution_support import TinyCNN


class ResBN(nn.Module):
    """Skip path around the searched layers and a BatchNorm after them (eval mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        s = F.relu(self.stem(x))
        y = F.relu(self.bn(self.a(s)))
        y = self.b(y) + s
        return self.head(F.adaptive_avg_pool2d(F.relu(y), 1).flatten(1))


class Untraceable(TinyCNN):
    def forward(self, x):
        if float(x.sum()) > -1e30:  # data-dependent control flow: torch.fx cannot trace this
            return super().forward(x)
        return x


def _check(model: nn.Module, x: torch.Tensor, expect_traced: bool) -> None:
    torch.manual_seed(1)
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if hasattr(model, "bn"):
            model.bn.running_mean.uniform_(-0.2, 0.2)
            model.bn.running_var.uniform_(0.5, 1.5)
        teacher_logits = model(x) + 0.3 * torch.randn(x.shape[0], model(x).shape[1])
    div = resolve_divergence("kl", 4.0)
    g = torch.Generator().manual_seed(0)
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        zero_sets = torch.rand(7, m.weight.numel(), generator=g) < 0.3
        looped = LoopedFitness(model, name, x, teacher_logits, div)(zero_sets)
        vec = VectorisedFitness(model, name, x, teacher_logits, div, chunk_size=3)
        assert vec.suffix.traced is expect_traced
        fast = vec(zero_sets)
        assert fast.shape == (7,)
        assert torch.allclose(fast, looped, rtol=1e-4, atol=1e-7), (name, fast, looped)
        # the values really depend on the candidate (otherwise allclose would be vacuous)
        assert float(looped.max() - looped.min()) > 0


def test_vectorised_equals_looped_plain_cnn():
    _check(TinyCNN(), torch.randn(16, 1, 16, 16), expect_traced=True)


def test_vectorised_equals_looped_residual_bn():
    _check(ResBN(), torch.randn(8, 1, 8, 8), expect_traced=True)


def test_vectorised_equals_looped_untraceable_fallback():
    _check(Untraceable(), torch.randn(8, 1, 16, 16), expect_traced=False)


def test_suffix_caches_upstream_and_runs_only_downstream():
    model = TinyCNN().eval()
    x = torch.randn(4, 1, 16, 16)
    suffix = build_suffix(model, "fc2", x)
    # downstream of fc2 is fc2 alone: its only input is the [4, 32] hidden activation
    assert [tuple(t.shape) for t in suffix.inputs] == [(4, 32)]
    with torch.no_grad():
        assert torch.allclose(suffix.module(*suffix.inputs), model(x), atol=1e-6)


def test_candidate_weights_zero_exactly_the_set():
    w = torch.arange(1.0, 7.0).view(2, 3)
    zs = torch.tensor([[True, False, False, False, False, True], [False] * 6])
    out = candidate_weights(w, zs)
    assert out[0].flatten().tolist() == [0, 2, 3, 4, 5, 0]
    assert torch.equal(out[1], w)


def test_kl_is_zero_for_identical_logits_and_positive_otherwise():
    t = torch.randn(5, 10)
    s = torch.stack([t, t + torch.randn(5, 10)])
    d = kl_divergence(s, t, temperature=4.0)
    assert abs(float(d[0])) < 1e-6 and float(d[1]) > 1e-4


def test_measure_throughput_reports_every_evaluator_with_equal_fitness():
    from netrazor.methods.evolution import measure_throughput
    from netrazor.methods.evolution.throughput import EVALUATORS

    torch.manual_seed(0)
    res = measure_throughput(TinyCNN(), torch.randn(16, 1, 16, 16), candidates=6, repeats=2,
                             mix={"conv": 1, "fc1": 3})
    assert set(res["layers"]) == {"conv", "fc1", "fc2"}
    assert res["default_evaluator"] == "delta"
    for r in res["layers"].values():
        assert r["looped_per_s"] > 0
        assert set(r["evaluators"]) == set(EVALUATORS)
        for e in r["evaluators"].values():
            assert e["per_s"] > 0 and e["ratio"] > 0
            assert e["max_abs_diff"] < 1e-6
        assert r["ratio"] == r["evaluators"]["delta"]["ratio"]
    assert res["overall"]["ratio"] == res["overall"]["evaluators"]["delta"]["ratio"] > 0
    # run mix: the same timings weighted by steps per layer (a layer missing from the mix weighs 0)
    assert res["run_mix"]["steps"] == {"conv": 1, "fc1": 3, "fc2": 0}
    assert res["run_mix"]["ratio"] == res["run_mix"]["evaluators"]["delta"]["ratio"] > 0


def test_divergence_plot_is_written(tmp_path):
    from netrazor.methods.evolution import EvolutionMethod, plot_divergence_vs_density
    from test_evolution_support import trained_teacher

    model, adapter = trained_teacher()
    _, rec = EvolutionMethod(targets=0.3, cycles=2, population=4, elite=1, generations=2, eval_size=32,
                             finetune_epochs=0).run(model, adapter)
    out = tmp_path / "div.png"
    plot_divergence_vs_density(rec, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
