"""Genetic operators keep set sizes, stay inside the pool and are reproducible."""

import torch

from netrazor.methods.evolution import genetics
from netrazor.methods.evolution.saliency import candidate_pool


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_initial_population_sizes_and_greedy_row():
    pop = genetics.initial_population(30, 10, 8, _g())
    assert pop.shape == (8, 30)
    assert (pop.sum(1) == 10).all()
    assert pop[0, :10].all() and not pop[0, 10:].any()  # greedy = least salient k
    assert len({tuple(r.tolist()) for r in pop}) > 4  # diverse


def test_crossover_inherits_common_members_and_repairs_size():
    a = torch.zeros(4, 20, dtype=torch.bool)
    b = torch.zeros(4, 20, dtype=torch.bool)
    a[:, :6] = True
    b[:, 3:9] = True
    child = genetics.crossover(a, b, 6, _g())
    assert (child.sum(1) == 6).all()
    assert child[:, 3:6].all()  # in both parents: always inherited
    assert not child[:, 9:].any()  # in neither parent and the wanted set is large enough
    same = genetics.crossover(a, a, 6, _g())
    assert torch.equal(same, a)


def test_mutation_swaps_with_pool_slots_and_keeps_size():
    m = torch.zeros(50, 40, dtype=torch.bool)
    m[:, :10] = True
    out = genetics.mutate(m, 0.3, _g())
    assert (out.sum(1) == 10).all()
    assert not torch.equal(out, m)
    assert torch.equal(genetics.mutate(m, 0.0, _g()), m)


def test_next_generation_keeps_elites_first():
    pop = genetics.initial_population(30, 10, 8, _g())
    fit = torch.tensor([5.0, 1.0, 3.0, 0.5, 9.0, 2.0, 8.0, 7.0])
    new, elite_fit = genetics.next_generation(pop, fit, 3, 10, 0.1, _g())
    assert new.shape == pop.shape
    assert elite_fit.tolist() == [0.5, 1.0, 2.0]
    assert torch.equal(new[:3], pop[[3, 1, 5]])


def test_operators_reproducible_with_seed():
    a = genetics.next_generation(genetics.initial_population(30, 10, 8, _g(3)), torch.rand(8, generator=_g(4)), 2, 10, 0.2, _g(5))
    b = genetics.next_generation(genetics.initial_population(30, 10, 8, _g(3)), torch.rand(8, generator=_g(4)), 2, 10, 0.2, _g(5))
    assert torch.equal(a[0], b[0])


def test_pool_is_least_salient_survivors():
    score = torch.tensor([0.5, 0.1, 0.0, 0.3, 0.2, 0.9])
    alive = torch.tensor([True, True, False, True, True, True])
    pool = candidate_pool(score, alive, 2, 1.5)
    assert pool.tolist() == [1, 4, 3]  # dead weight 2 excluded, sorted by saliency
