"""Delta evaluation and worker processes: the same fitness as one forward per candidate.

DeltaFitness computes only what a candidate changes (weight deltas, channel-sparse propagation,
an exact strided-slice max pool); WorkerFitness shards the looped reference over forked processes.
Both must give LoopedFitness's values, and a DE run must pick the same masks with them."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netrazor.methods.evolution import EvolutionMethod
from netrazor.methods.evolution.delta import DeltaFitness, SliceMaxPool2d
from netrazor.methods.evolution.divergence import resolve_divergence
from netrazor.methods.evolution.fitness import LoopedFitness
from netrazor.methods.evolution.workers import WorkerFitness
from netrazor.methods.masks import prunable_layers
from test_evolution_fitness import ResBN, Untraceable
from test_evolution_support import TinyCNN, trained_teacher


class MiniLeNet(nn.Sequential):
    """LeNet-5's pattern: conv -> relu -> maxpool -> conv (channel-sparse path), padded second conv."""

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 3 * 3, 20), nn.ReLU(), nn.Linear(20, 4))


class FunctionalChain(nn.Module):
    """A chain written with functions (F.relu, F.max_pool2d) and a Linear -> relu -> Linear chain."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(2, 5, 3), nn.Conv2d(5, 4, 3, stride=2)
        self.f1, self.f2 = nn.Linear(4 * 2 * 2, 12), nn.Linear(12, 3)

    def forward(self, x):
        y = self.c2(F.max_pool2d(F.relu(self.c1(x)), 2))
        return self.f2(torch.tanh(self.f1(F.relu(y).flatten(1))))


def _setup(model, x, classes):
    torch.manual_seed(1)
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        teacher = model(x) + 0.3 * torch.randn(x.shape[0], classes)
    return teacher, resolve_divergence("kl", 4.0)


def _zero_sets(numel, n, p, g):
    return torch.rand(n, numel, generator=g) < p


@pytest.mark.parametrize("knobs", [dict(), dict(example_chunk=5, chunk_size=3), dict(fast_pool=False),
                                   dict(row_buckets=1, sparse_threshold=1.0)])
def test_delta_equals_looped_on_lenet_pattern(knobs):
    model, x = MiniLeNet(), torch.randn(16, 1, 16, 16)
    teacher, div = _setup(model, x, 4)
    g = torch.Generator().manual_seed(0)
    paths = set()
    for name, m in prunable_layers(model).items():
        for p in (0.04, 0.3):  # few touched channels (sparse path) and nearly all (dense path)
            zs = _zero_sets(m.weight.numel(), 7, p, g)
            ref = LoopedFitness(model, name, x, teacher, div)(zs)
            fit = DeltaFitness(model, name, x, teacher, div, **knobs)
            got = fit(zs)
            assert fit.fallback is None
            paths.add(fit.path_used)
            assert torch.allclose(got, ref, rtol=1e-4, atol=1e-7), (name, p, got, ref)
            assert float(ref.max() - ref.min()) > 0  # the candidates really differ
    assert "dense" in paths and paths & {"channel-sparse", "channel-shared"}, paths


def _pool_draws(numel, pool_size, n, k, g):
    """One DE step's candidates: random k-subsets of one small pool, so channel subsets repeat."""
    pool = torch.randperm(numel, generator=g)[:pool_size]
    keys = torch.rand(n, pool_size, generator=g)
    zs = torch.zeros(n, numel, dtype=torch.bool)
    zs[:, pool] = torch.zeros_like(keys, dtype=torch.bool).scatter_(1, torch.topk(keys, k, dim=1).indices, True)
    return zs


@pytest.mark.parametrize("make,layer,shape", [(MiniLeNet, "0", (14, 1, 16, 16)),        # conv -> relu/pool -> conv
                                              (FunctionalChain, "f1", (14, 2, 14, 14)),  # linear -> tanh -> linear
                                              (TinyCNN, "fc1", (14, 1, 16, 16))])         # linear -> F.relu -> linear
def test_shared_channel_subsets_equal_looped(make, layer, shape):
    model, x = make(), torch.randn(*shape)
    teacher, div = _setup(model, x, model(x).shape[1])
    numel = model.get_submodule(layer).weight.numel()
    zs = _pool_draws(numel, 9, 24, 3, torch.Generator().manual_seed(2))
    ref = LoopedFitness(model, layer, x, teacher, div)(zs)
    assert float(ref.max() - ref.min()) > 0
    for knobs in (dict(), dict(example_chunk=4)):  # whole batch, and 4 example chunks
        shared = DeltaFitness(model, layer, x, teacher, div, **knobs)
        got = shared(zs)
        assert shared.path_used == "channel-shared"  # 24 candidates, ~1.5 pool slots per channel
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-7)
    plain = DeltaFitness(model, layer, x, teacher, div, dedup_channels=False)
    torch.testing.assert_close(plain(zs), ref, rtol=1e-4, atol=1e-7)
    assert plain.path_used == "channel-sparse"
    # every candidate distinct on every channel: sharing does not pay, the per-candidate form runs
    one_each = torch.zeros(3, numel, dtype=torch.bool)
    for c in range(3):
        one_each[c, c] = True  # weight c of row 0: three different subsets of one channel
    fit = DeltaFitness(model, layer, x, teacher, div)
    torch.testing.assert_close(fit(one_each), LoopedFitness(model, layer, x, teacher, div)(one_each),
                               rtol=1e-4, atol=1e-7)
    assert fit.path_used == "channel-sparse"


def test_delta_paths_chosen_by_touched_channels():
    model, x = MiniLeNet(), torch.randn(8, 1, 16, 16)
    teacher, div = _setup(model, x, 4)
    conv = model[0]
    one_channel = torch.zeros(3, conv.weight.numel(), dtype=torch.bool)
    one_channel[:, :5] = True  # all inside output channel 0
    fit = DeltaFitness(model, "0", x, teacher, div)
    ref = LoopedFitness(model, "0", x, teacher, div)(one_channel)
    assert torch.allclose(fit(one_channel), ref, rtol=1e-4, atol=1e-7)
    assert fit.path_used == "channel-shared"  # three equal candidates: one (channel, subset) pair
    everything = torch.ones(2, conv.weight.numel(), dtype=torch.bool)
    ref = LoopedFitness(model, "0", x, teacher, div)(everything)
    assert torch.allclose(fit(everything), ref, rtol=1e-4, atol=1e-7)
    assert fit.path_used == "dense"
    # nothing zeroed: the committed student's own divergence, for every candidate
    none = torch.zeros(2, conv.weight.numel(), dtype=torch.bool)
    base = LoopedFitness(model, "0", x, teacher, div)(none)
    assert torch.allclose(fit(none), base, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("make", [FunctionalChain, ResBN, TinyCNN])
def test_delta_equals_looped_functional_residual_bn(make):
    model = make()
    x = torch.randn(12, 2, 14, 14) if make is FunctionalChain else torch.randn(12, 1, 16 if make is TinyCNN else 8,
                                                                                16 if make is TinyCNN else 8)
    classes = model(x).shape[1]
    teacher, div = _setup(model, x, classes)
    g = torch.Generator().manual_seed(0)
    if make is ResBN:
        with torch.no_grad():
            model.bn.running_mean.uniform_(-0.2, 0.2)
            model.bn.running_var.uniform_(0.5, 1.5)
    for name, m in prunable_layers(model).items():
        zs = _zero_sets(m.weight.numel(), 6, 0.2, g)
        ref = LoopedFitness(model, name, x, teacher, div)(zs)
        fit = DeltaFitness(model, name, x, teacher, div, sparse_threshold=1.0, example_chunk=5)
        assert fit.fallback is None, fit.fallback
        assert torch.allclose(fit(zs), ref, rtol=1e-4, atol=1e-7), name


def test_delta_falls_back_where_it_does_not_apply():
    model, x = Untraceable(), torch.randn(8, 1, 16, 16)
    teacher, div = _setup(model, x, 4)
    zs = _zero_sets(model.conv.weight.numel(), 5, 0.3, torch.Generator().manual_seed(0))
    fit = DeltaFitness(model, "conv", x, teacher, div)
    assert fit.fallback is not None and "trace" in fit.fallback
    assert torch.allclose(fit(zs), LoopedFitness(model, "conv", x, teacher, div)(zs), rtol=1e-4, atol=1e-7)
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    xg = torch.randn(6, 4, 6, 6)
    t, _ = _setup(grouped, xg, 3)
    fit = DeltaFitness(grouped, "0", xg, t, div)
    assert fit.fallback == "grouped conv"
    zs = _zero_sets(grouped[0].weight.numel(), 4, 0.3, torch.Generator().manual_seed(1))
    assert torch.allclose(fit(zs), LoopedFitness(grouped, "0", xg, t, div)(zs), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("k,size", [(2, (5, 3, 9, 8)), (3, (2, 4, 10, 7)), (2, (3, 6, 6))])
def test_slice_max_pool_equals_max_pool2d(k, size):
    x = torch.randn(*size)
    x.view(-1)[::7] = float("nan")  # NaN propagates the same way
    ref, got = F.max_pool2d(x, k), SliceMaxPool2d(k)(x)
    assert ref.shape == got.shape
    assert torch.equal(ref.isnan(), got.isnan())
    assert torch.equal(torch.nan_to_num(ref), torch.nan_to_num(got))


def test_worker_processes_equal_looped_and_close():
    model, x = MiniLeNet(), torch.randn(10, 1, 16, 16)
    teacher, div = _setup(model, x, 4)
    zs = _zero_sets(model[3].weight.numel(), 7, 0.2, torch.Generator().manual_seed(0))
    ref = LoopedFitness(model, "3", x, teacher, div)(zs)
    fit = WorkerFitness(model, "3", x, teacher, div, workers=2, max_candidates=4)  # 2 rounds through the buffer
    try:
        got = fit(zs)
        procs = list(fit.pool._pool)
        assert len(procs) == 2
    finally:
        fit.close()
    # the same computation in other processes; workers run single-threaded, this process may not,
    # so reductions can differ in the last bits (bit-equal under OMP_NUM_THREADS=1)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-7)  # float32 KL of ~3e-3
    assert all(not p.is_alive() for p in procs)


FAST = dict(targets=0.25, cycles=2, population=8, elite=2, generations=3, candidate_size=0.1, eval_size=64,
            finetune_epochs=0, seed=0)


def _masks(model):
    return {n: (m.weight != 0) for n, m in prunable_layers(model).items()}


def test_de_run_picks_the_same_masks_with_every_evaluator():
    model, adapter = trained_teacher()
    runs = {}
    for evaluator in ("looped", "delta", "workers"):
        student, rec = EvolutionMethod(evaluator=evaluator, workers=2, **FAST).run(copy.deepcopy(model), adapter)
        runs[evaluator] = (_masks(student), [s["divergence"] for s in rec["steps"]])
    ref_masks, ref_div = runs["looped"]
    for evaluator, (masks, divs) in runs.items():
        assert all(torch.equal(masks[n], ref_masks[n]) for n in ref_masks), evaluator
        assert divs == pytest.approx(ref_div, rel=1e-4, abs=1e-7), evaluator


def test_pool_layout_and_gathers_are_reused_across_calls():
    model, x = MiniLeNet(), torch.randn(12, 1, 16, 16)
    teacher, div = _setup(model, x, 4)
    w = model[7].weight  # the Linear after the convs (dense path: every row touched)
    g = torch.Generator().manual_seed(0)
    pool = torch.randperm(w.numel(), generator=g)[:60]
    fit = DeltaFitness(model, "7", x, teacher, div, pool=pool, example_chunk=5)
    looped = LoopedFitness(model, "7", x, teacher, div)
    for call in range(3):  # a step's generations: new subsets of the same pool
        zs = torch.zeros(6, w.numel(), dtype=torch.bool)
        zs[:, pool] = torch.rand(6, pool.numel(), generator=g) < 0.5
        assert torch.allclose(fit(zs), looped(zs), rtol=1e-4, atol=1e-7), call
        assert fit._pool_layout is not None and len(fit._g_cache) == 3  # 12 examples in chunks of 5
    outside = torch.zeros(2, w.numel(), dtype=torch.bool)
    outside[:, [i for i in range(w.numel()) if i not in set(pool.tolist())][:3]] = True  # not in the pool
    assert torch.allclose(fit(outside), looped(outside), rtol=1e-4, atol=1e-7)
