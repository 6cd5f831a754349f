"""Layer gates on ResNet-20 sections: physical removal, idle rectifiers, the flip estimator's cost."""

import copy

import pytest
import torch
from torch import nn

from netrazor.data import make_synthetic
from netrazor.measure import count_macs, count_params
from netrazor.methods.base import Adapter
from netrazor.methods.entropy_depth.entropy import find_rectifiers
from netrazor.methods.gates import GateObjective, GatesMethod, ZeroBranch, attach_gates
from netrazor.methods.gates.sections import drop_idle_rectifiers
from netrazor.models import build_model
from netrazor.surgery import load_model, save_model
from netrazor.train import TrainConfig


def _resnet(seed=0, classes=4, size=16):
    torch.manual_seed(seed)
    model = build_model("resnet20", num_classes=classes, in_channels=3, input_size=(size, size), width_mult=0.25)
    with torch.no_grad():  # trained-looking BatchNorms, so every section changes the output
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _branch_params(block):
    return sum(p.numel() for p in block.branch.parameters())


@pytest.mark.parametrize("section", ["layer1.1", "layer2.0"])
def test_a_layer_gate_pushed_to_zero_removes_its_section_and_keeps_the_gated_outputs(section):
    model = _resnet()
    x = torch.randn(6, 3, 16, 16)
    params, macs = count_params(model), count_macs(model, (3, 16, 16))
    gs = attach_gates(model, x[:2], units=False, filters=False, layers=True)
    block = model.get_submodule(section)
    branch_params = _branch_params(block)
    with torch.no_grad():
        dense_out = model(x)
        gs.gates[f"{section}.branch"].theta.zero_()
        gated_out = model(x)  # eval: the gate is θ rounded = 0, the branch still runs
    assert not torch.allclose(dense_out, gated_out, atol=1e-3)  # the section mattered

    assert gs.prune_below(0.01) == 1
    assert isinstance(block.branch, ZeroBranch)  # the branch's convs are gone, not masked
    assert f"{section}.branch" not in gs.gates
    assert count_params(model) == params - branch_params
    assert count_macs(model, (3, 16, 16)) < macs
    with torch.no_grad():
        assert torch.allclose(model(x), gated_out, atol=1e-5)

    final = gs.finalize()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in final.modules())
    assert not any("Gate" in type(m).__name__ for m in final.modules())
    with torch.no_grad():
        assert torch.allclose(final(x), gated_out, atol=1e-5)
    rects = [n for n, _ in find_rectifiers(final)]
    if section == "layer1.1":  # identity shortcut on a ReLU output: its ReLU is idle and goes too
        assert gs.idle_rectifiers == ["layer1.1.relu"]
        assert len(rects) == 19 - 2
    else:  # projection shortcut (conv + BN) can be negative: the ReLU after it stays
        assert gs.idle_rectifiers == []
        assert len(rects) == 19 - 1
        assert isinstance(final.layer2[0].relu, nn.ReLU)


def test_finalized_shallower_resnet_saves_and_loads_as_data(tmp_path):
    model = _resnet(1)
    x = torch.randn(4, 3, 16, 16)
    gs = attach_gates(model, x[:2], units=False, filters=False, layers=True)
    with torch.no_grad():
        for name in ("layer1.1.branch", "layer1.2.branch", "layer3.2.branch"):
            gs.gates[name].theta.zero_()
        gated_out = model(x)
    final = gs.finalize()
    assert sorted(gs.removed_sections) == ["layer1.1.branch", "layer1.2.branch", "layer3.2.branch"]
    assert sorted(gs.idle_rectifiers) == ["layer1.1.relu", "layer1.2.relu", "layer3.2.relu"]
    save_model(final, tmp_path / "m")
    again = load_model(tmp_path / "m").eval()
    with torch.no_grad():
        assert torch.allclose(again(x), gated_out, atol=1e-5)
    assert len(find_rectifiers(again)) == 19 - 6


def test_idle_rectifier_rule_is_exact_and_leaves_needed_relus():
    dense = _resnet(2)
    assert drop_idle_rectifiers(copy.deepcopy(dense)) == []  # every ReLU of a dense ResNet is needed

    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.a, self.b, self.c, self.d = nn.ReLU(), nn.Identity(), nn.ReLU(), nn.ReLU6()
            self.e = nn.ReLU()

        def forward(self, x):
            y = self.c(self.b(self.a(self.conv(x))))  # c sees a's output through an Identity
            return self.e(self.d(x) - y)  # e sees a difference: not provably >= 0

    model = Chain()
    assert drop_idle_rectifiers(model) == ["c"]
    assert isinstance(model.c, nn.Identity) and isinstance(model.e, nn.ReLU) and isinstance(model.a, nn.ReLU)


def test_only_layer_gates_need_one_forward_copy_and_one_extra_pass_per_flipped_gate():
    model = _resnet(3).train()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,))
    gs = attach_gates(model, x[:2], units=False, filters=False, layers=True)
    obj = GateObjective(gs, flip_per_step=2, total_steps=10, seed=1)
    batches = []
    handle = model.stem.conv.register_forward_hook(lambda m, i, o: batches.append(o.shape[0]))
    loss, logits = obj.loss_fn(model, x, y)
    handle.remove()
    # the main pass at batch 8 (not the antithetic [x; x]) plus one replay per flipped gate
    assert batches == [8, 8, 8]
    assert logits.shape == (8, 4)


def test_flip_estimate_reusing_the_main_pass_equals_two_replays(monkeypatch):
    import netrazor.methods.gates.objective as objective

    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 4, (16,))
    grads = []
    for reuse in (True, False):
        model = _resnet(4).train()
        gs = attach_gates(model, x[:2], units=False, filters=False, layers=True, init=0.5)
        obj = GateObjective(gs, total_steps=10, seed=7)
        if not reuse:  # dropout in the net makes the objective replay both values
            monkeypatch.setattr(objective, "_has_dropout", lambda m: True)
        loss, _ = obj.loss_fn(model, x, y)
        loss.backward()
        grads.append(torch.cat([g.theta.grad for g in gs.gate_list()]))
    assert bool((grads[0] != 0).all())
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_gates_method_removes_sections_of_a_resnet_during_training():
    data = make_synthetic(n_train=256, n_val=64, n_test=64, num_classes=3, shape=(3, 8, 8), seed=2)
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=3, in_channels=3, input_size=(8, 8), width_mult=0.25)
    config = TrainConfig(epochs=2, batch_size=32, lr=0.02, momentum=0.9, weight_decay=0.0, schedule="cosine")
    method = GatesMethod(epochs=2, units=False, filters=False, layers=True, kappa=5.0, theta_lr=0.2,
                         flip_per_step=1, plots=False, seed=0)
    out, rec = method.run(model, Adapter(data=data, train_config=config))
    removed = rec["removed_sections"]
    assert len(removed) >= 1  # a heavy MAC price makes some section go
    assert sum(isinstance(m, ZeroBranch) for m in out.modules()) == len(removed)
    assert rec["macs_after"] < rec["macs_before"] and rec["params_after"] < rec["params_before"]
    assert not any("Gate" in type(m).__name__ for m in out.modules())
    assert not any(m._forward_hooks for m in out.modules())
