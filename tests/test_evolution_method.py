"""EvolutionMethod end to end on a tiny CNN and the synthetic task (stand-in training loop)."""

import pytest
import torch

from netrazor.data.types import ImageSet
from netrazor.errors import ConfigError
from netrazor.methods.baselines import global_magnitude_masks, global_magnitude_prune
from netrazor.methods.evolution import EvolutionMethod
from netrazor.methods.evolution.divergence import kl_divergence
from netrazor.methods.masks import prunable_layers
from netrazor.methods.evolution.targets import keep_counts
from test_evolution_support import StandInAdapter, trained_teacher

FAST = dict(cycles=2, population=8, elite=2, generations=3, candidate_size=0.1, eval_size=64)


def _masks(model):
    return {n: (m.weight != 0) for n, m in prunable_layers(model).items()}


def test_same_seed_same_masks_and_other_seed_differs():
    model, adapter = trained_teacher()
    a, rec_a = EvolutionMethod(targets=0.2, seed=3, finetune_epochs=1, **FAST).run(model, adapter)
    b, rec_b = EvolutionMethod(targets=0.2, seed=3, finetune_epochs=1, **FAST).run(model, adapter)
    c, _ = EvolutionMethod(targets=0.2, seed=4, finetune_epochs=0, **FAST).run(model, adapter)
    ma, mb, mc = _masks(a), _masks(b), _masks(c)
    assert all(torch.equal(ma[n], mb[n]) for n in ma)
    assert [s["divergence"] for s in rec_a["steps"]] == [s["divergence"] for s in rec_b["steps"]]
    assert any(not torch.equal(ma[n], mc[n]) for n in ma)
    # the input model (the teacher) is left untouched
    assert all(bool((m.weight != 0).all()) for m in prunable_layers(model).values())


def test_density_targets_reached_exactly_dict_and_global():
    model, adapter = trained_teacher()
    targets = {"conv": 0.5, "fc1": 0.05, "fc2": 0.3}
    student, rec = EvolutionMethod(targets=targets, finetune_epochs=1, **FAST).run(model, adapter)
    for name, m in prunable_layers(student).items():
        want = int(round(targets[name] * m.weight.numel()))
        assert int((m.weight != 0).sum()) == want, name
        assert rec["layers"][name]["reached"]
    student, rec = EvolutionMethod(targets=0.1, finetune_epochs=0, **FAST).run(model, adapter)
    counts = keep_counts(prunable_layers(model), 0.1)
    for name, m in prunable_layers(student).items():
        assert int((m.weight != 0).sum()) == counts[name]
    total = sum(m.weight.numel() for m in prunable_layers(model).values())
    assert sum(counts.values()) == round(0.1 * total)


class _PoisonedSet(ImageSet):
    """A test split that fails the test the moment anything reads its images or labels."""

    def __getattribute__(self, name):
        if name in ("images", "labels"):
            raise AssertionError(f"the test split's {name} were read")
        return super().__getattribute__(name)


def test_eval_batch_never_comes_from_test_split():
    model, adapter = trained_teacher()
    data = adapter.data
    poisoned = _PoisonedSet.__new__(_PoisonedSet)
    object.__setattr__(poisoned, "__dict__", dict(data.test.__dict__))
    bundle = type(data)(name=data.name, train=data.train, val=data.val, test=poisoned,
                        num_classes=data.num_classes, mean=data.mean, std=data.std)
    guarded = StandInAdapter(data=bundle, train_config=None)
    for split in ("val", "train"):
        _, rec = EvolutionMethod(targets=0.3, eval_split=split, finetune_epochs=1, **FAST).run(model, guarded)
        assert rec["eval_batch"]["split"] == split
    x, y, idx = EvolutionMethod(eval_size=32).eval_batch(data)
    assert torch.equal(x, data.normalize(data.val.images[idx]))
    with pytest.raises(ConfigError, match="test split"):
        EvolutionMethod(eval_split="test")


def test_de_keeps_divergence_at_or_below_magnitude_pruning_at_high_sparsity():
    model, adapter = trained_teacher()
    sparsity = 0.92
    # Same layers, same per-layer budgets as global magnitude pruning; no fine-tuning for either.
    mag_masks = global_magnitude_masks(model, sparsity)
    targets = {n: float(m.float().mean()) for n, m in mag_masks.items()}
    magnitude, _ = global_magnitude_prune(__import__("copy").deepcopy(model), sparsity)
    method = EvolutionMethod(targets=targets, finetune_epochs=0, cycles=3, population=16, elite=4,
                             generations=4, candidate_size=0.05, eval_size=128, seed=0)
    student, rec = method.run(model, adapter)
    x_eval, _, idx = method.eval_batch(adapter.data)
    rest = torch.ones(len(adapter.data.val), dtype=torch.bool)
    rest[idx] = False
    x_held = adapter.data.normalize(adapter.data.val.images[rest])
    with torch.no_grad():
        def kl(m, x):
            return float(kl_divergence(m(x).unsqueeze(0), model(x), 4.0)[0])
        de_eval, mag_eval = kl(student, x_eval), kl(magnitude, x_eval)
        de_held, mag_held = kl(student, x_held), kl(magnitude, x_held)
    assert rec["overall_density"] == pytest.approx(1 - sparsity, abs=1e-3)
    assert mag_eval > 1e-4  # magnitude pruning really hurts at this sparsity: a real comparison
    assert de_eval <= mag_eval
    assert de_held <= mag_held  # and the gain is not only on the batch DE was scored on
    print(f"KL eval: DE {de_eval:.4g} vs magnitude {mag_eval:.4g}; held-out: DE {de_held:.4g} vs {mag_held:.4g}")


def test_schedule_steps_match_the_steps_of_a_run():
    from collections import Counter

    model, adapter = trained_teacher()
    method = EvolutionMethod(targets=0.2, seed=0, finetune_epochs=0, **FAST)
    _, rec = method.run(model, adapter)
    counted = Counter(s["layer"] for s in rec["steps"])
    planned = method.schedule_steps(model)
    assert planned == {n: counted.get(n, 0) for n in planned}
    assert sum(planned.values()) > len(planned)  # several steps per layer: a real check
