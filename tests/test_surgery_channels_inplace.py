"""remove_channels(inplace=True): the model object itself shrinks (modules, hooks and uncut parameters
keep their identity), index maps describe every cut, and a failed removal restores the model exactly."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from torch import nn

import netrazor.surgery.channels as channels_module
from netrazor.data import make_synthetic
from netrazor.errors import SurgeryError
from netrazor.models import build_model
from netrazor.surgery import prunable_groups, remove_channels
from netrazor.train import TrainConfig, Trainer
from test_surgery_support import TEST_MODELS, make


def _plan(groups, seed=0, fraction=0.4):
    rng = random.Random(seed)
    return {g.root: sorted(rng.sample(range(g.size), max(1, int(g.size * fraction)))) for g in groups}


def _sliced(param: torch.Tensor, cuts) -> torch.Tensor:
    out = param.detach()
    for dim, kept in cuts:
        out = out.index_select(dim, kept)
    return out


@pytest.mark.parametrize("name", sorted(TEST_MODELS))
def test_inplace_equals_the_copy_and_keeps_identities(name):
    model, x = make(name)
    groups = prunable_groups(model, x)
    plan = _plan(groups)
    copied, copy_maps = remove_channels(model, plan, x, return_index_maps=True)

    modules_before = dict(model.named_modules())
    params_before = dict(model.named_parameters())
    shapes_before = {k: v.shape for k, v in params_before.items()}
    out, maps = remove_channels(model, plan, x, inplace=True, return_index_maps=True)

    assert out is model
    assert all(m is modules_before[n] for n, m in model.named_modules())  # same module objects
    params_after = dict(model.named_parameters())
    assert params_after.keys() == params_before.keys()
    assert maps and maps.keys() == copy_maps.keys()
    for k, p in params_after.items():
        if k in maps:  # cut: a new Parameter, and the map tells exactly which entries survived
            assert p is not params_before[k] and p.shape != shapes_before[k]
            assert torch.equal(p.detach(), _sliced(params_before[k], maps[k]))
            assert all(torch.equal(a, b) for (_, a), (_, b) in zip(maps[k], copy_maps[k]))
        else:  # not cut: the very same object (an optimizer's state for it stays attached)
            assert p is params_before[k]
    copied_state = copied.state_dict()
    assert all(torch.equal(v, copied_state[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        torch.testing.assert_close(model(x), copied(x))


def test_hooks_and_references_survive_an_inplace_removal():
    model, x = make("cnn")
    groups = prunable_groups(model, x)
    seen = []
    hooked = model.get_submodule(groups[0].root)
    hooked.register_forward_hook(lambda m, args, out: seen.append(out.shape[1]))
    remove_channels(model, {groups[0].root: [0, 1]}, x, inplace=True)
    seen.clear()
    with torch.no_grad():
        model(x)
    assert seen == [groups[0].size - 2]  # the hook fires on the shrunk layer


def test_requires_grad_and_grads_are_kept_on_cut_parameters():
    model, x = make("mlp")
    root = prunable_groups(model, x)[0].root
    layer = model.get_submodule(root)
    layer.bias.requires_grad_(False)  # a frozen tensor must stay frozen (Torch-Pruning alone unfreezes it)
    layer.weight.grad = torch.randn_like(layer.weight)
    grad_before = layer.weight.grad.clone()
    _, maps = remove_channels(model, {root: [1, 3]}, x, inplace=True, return_index_maps=True)
    assert not layer.bias.requires_grad and layer.weight.requires_grad
    assert torch.equal(layer.weight.grad, _sliced(grad_before, maps[f"{root}.weight"]))
    assert maps[f"{root}.weight"][0][0] == 0 and 1 not in maps[f"{root}.weight"][0][1].tolist()


@pytest.mark.parametrize("inplace", [True, False])
def test_a_refused_removal_leaves_the_model_exactly_as_it_was(monkeypatch, inplace):
    model, x = make("resnet")
    groups = prunable_groups(model, x)
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    state = copy.deepcopy(model.state_dict())
    widths = {n: m.out_channels for n, m in modules.items() if isinstance(m, nn.Conv2d)}
    with torch.no_grad():
        expected = model(x)

    def refuse(*args, **kwargs):
        raise SurgeryError("refused for the test")

    monkeypatch.setattr(channels_module, "check_equivalence", refuse)
    with pytest.raises(SurgeryError, match="refused for the test"):
        remove_channels(model, _plan(groups), x, inplace=inplace)
    assert all(p is params[k] for k, p in model.named_parameters())
    assert all(m is modules[n] for n, m in model.named_modules())
    assert {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)} == widths
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()) and model.state_dict().keys() == state.keys()
    assert not model.training  # the mode is kept as well
    with torch.no_grad():
        assert torch.equal(model(x), expected)


def test_no_channels_returns_the_model_itself_in_place_and_a_copy_otherwise():
    model, x = make("mlp")
    assert remove_channels(model, {}, x, inplace=True) is model
    copied, maps = remove_channels(model, {}, x, return_index_maps=True)
    assert copied is not model and maps == {}


def test_index_maps_carry_momentum_through_trainer_rebuild_optimizer():
    # What a method that shrinks a model during training (e.g. gates) needs: the Trainer keeps
    # the same model object, and the optimizer state of the cut parameters is sliced, not reset.
    data = make_synthetic(n_train=256, n_val=64, n_test=64, num_classes=4, shape=(1, 8, 8), seed=0)
    torch.manual_seed(0)
    model = build_model("lenet300", num_classes=4, in_channels=1, input_size=8, width_mult=0.1)
    trainer = Trainer(model, data, TrainConfig(epochs=1, batch_size=64, lr=0.05, momentum=0.9))
    trainer.fit()
    momentum = {n: trainer.optimizer.state[p]["momentum_buffer"].clone() for n, p in model.named_parameters()}
    x = data.normalize(data.train.images[:8])
    _, maps = remove_channels(trainer.model, {"fc1": [0, 2, 5]}, x, inplace=True, return_index_maps=True)
    assert trainer.model is model and model.fc1.out_features == 27
    outcome = trainer.rebuild_optimizer(index_maps=maps)
    assert {n for n, how in outcome.items() if how == "sliced"} == {"fc1.weight", "fc1.bias", "fc2.weight"}
    assert all(how == "kept" for n, how in outcome.items() if n not in maps)
    for name, param in model.named_parameters():
        buf = trainer.optimizer.state[param]["momentum_buffer"]
        assert torch.equal(buf, _sliced(momentum[name], maps.get(name, [])))
