"""Gates inside the real training loop: convergence, removal mid-training, folding, the method."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from netrazor.data import make_synthetic
from netrazor.errors import ConfigError
from netrazor.methods.base import Adapter
from netrazor.methods.gates import BernoulliGate, GateObjective, GatesMethod, attach_gates
from netrazor.train import TrainConfig, Trainer


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_train=960, n_val=240, n_test=240, num_classes=4, shape=(1, 12, 12), seed=3)


def _mlp(width=48):
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(144, width), relu1=nn.ReLU(),
                                     fc2=nn.Linear(width, 32), relu2=nn.ReLU(), fc3=nn.Linear(32, 4)))


def _config(epochs):
    return TrainConfig(epochs=epochs, batch_size=32, lr=0.05, momentum=0.9, weight_decay=0.0, schedule="cosine")


class _Watch:
    """Records the trainer's optimiser parameters after each removal and the step losses."""

    def __init__(self, obj):
        self.obj, self.losses, self.checked = obj, [], 0
        self._seen = 0

    def on_step_end(self, trainer, step, loss):
        self.losses.append(loss)
        if len(self.obj.removals) > self._seen:  # a removal happened in this step
            self._seen = len(self.obj.removals)
            opt = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
            assert opt == {id(p) for p in trainer.model.parameters()}
            # momentum was carried over, cut like the weights (not reset)
            w = trainer.model.fc2.weight
            assert trainer.optimizer.state[w]["momentum_buffer"].shape == w.shape
            self.checked += 1


def test_training_prunes_physically_converges_and_folds_exactly(data):
    torch.manual_seed(0)
    model = _mlp()
    x0 = data.normalize(data.val.images[:2])
    gs = attach_gates(model, x0, inputs=True)
    params_dense = sum(p.numel() for p in model.parameters())
    epochs = 12
    obj = GateObjective(gs, kappa=2.0, theta_lr=0.05, prune_every=10, total_steps=epochs * 30, seed=0)
    watch = _Watch(obj)
    history = Trainer(model, data, _config(epochs), callbacks=[obj, watch], loss_fn=obj.loss_fn).fit()
    assert len(history) == epochs
    # removal happened mid-training, the optimiser followed, and training went on with finite loss
    assert obj.removals and obj.removals[0]["step"] < epochs * 30 // 2
    assert watch.checked >= 1
    assert all(torch.isfinite(torch.tensor(watch.losses)))
    assert sum(p.numel() for p in model.parameters()) < params_dense
    # θ converged to the vertices
    assert obj.converged_fraction() > 0.9
    # eval outputs are the same before and after folding the gates away
    model.eval()
    xv = data.normalize(data.val.images)
    with torch.no_grad():
        gated = model(xv)
    final = gs.finalize()
    with torch.no_grad():
        folded = final(xv)
    assert torch.allclose(gated, folded, atol=1e-5)
    assert not any(isinstance(m, BernoulliGate) for m in final.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in final.modules())
    acc = (folded.argmax(1) == data.val.labels).float().mean().item()
    assert acc > 0.8  # the task is learnable by the pruned net (chance is 0.25)


def test_gates_method_run_returns_a_plain_smaller_model_and_a_record(data, tmp_path):
    torch.manual_seed(0)
    model = _mlp()
    adapter = Adapter(data=data, train_config=_config(6), run_dir=tmp_path)
    method = GatesMethod(kappa=2.0, theta_lr=0.05, prune_every=10, epochs=6, inputs=True)
    out, record = method.run(model, adapter)
    assert not any(isinstance(m, BernoulliGate) for m in out.modules())
    assert record["params_after"] == sum(p.numel() for p in out.parameters()) < record["params_before"]
    assert record["macs_after"] < record["macs_before"]
    assert record["widths_before"]["fc1"] == 48 and record["widths_after"]["fc1"] == out.fc1.out_features
    assert 0.0 <= record["test_error"] <= 1.0 and len(record["epoch_seconds"]) == 6
    assert record["theta_trajectory"][0]["step"] == 0 and len(record["theta_trajectory"]) > 2
    for png in record["plots"]:
        assert png.endswith(".png") and (tmp_path / png.split("/")[-1]).stat().st_size > 1000


def test_kappa_zero_prunes_less_than_a_large_kappa(data):
    kept = []
    for kappa in (0.0, 4.0):
        torch.manual_seed(0)
        adapter = Adapter(data=data, train_config=_config(4))
        _, record = GatesMethod(kappa=kappa, theta_lr=0.05, prune_every=10, epochs=4, plots=False).run(_mlp(), adapter)
        kept.append(record["params_after"])
    assert kept[1] < kept[0]


def test_bad_knobs_are_rejected():
    with pytest.raises(ValueError, match="layer_vs_unit"):
        GatesMethod(layer_vs_unit=1.5)
    with pytest.raises(ValueError, match="estimator"):
        GatesMethod(estimator="magic")


def test_layer_gates_learn_through_the_flip_estimator_in_a_residual_net():
    from netrazor.models import build_model

    torch.manual_seed(0)
    data = make_synthetic(n_train=64, n_val=32, n_test=32, num_classes=3, shape=(3, 8, 8), seed=1)
    model = build_model("resnet20", num_classes=3, in_channels=3, input_size=(8, 8), width_mult=0.25)
    gs = attach_gates(model, data.normalize(data.val.images[:2]), units=False, filters=False, layers=True)
    assert len(gs.gates) == 9
    obj = GateObjective(gs, kappa=1.0, layer_vs_unit=0.5, theta_lr=0.05, prune_every=0, total_steps=4)
    before = torch.stack([g.theta.detach().clone() for g in gs.gate_list()])
    running = model.stem.bn.running_mean.clone()
    Trainer(model, data, TrainConfig(epochs=1, batch_size=16, lr=0.01), callbacks=[obj], loss_fn=obj.loss_fn).fit()
    after = torch.stack([g.theta.detach() for g in gs.gate_list()])
    assert bool((before != after).all())  # every layer gate received a gradient and moved
    assert bool(((after >= 0) & (after <= 1)).all())  # projected onto [0, 1]
    assert not torch.equal(running, model.stem.bn.running_mean)  # the real passes still update BN


def test_flip_per_step_estimates_k_layer_gates_scaled_by_l_over_k():
    from netrazor.models import build_model

    torch.manual_seed(0)
    data = make_synthetic(n_train=32, n_val=16, n_test=16, num_classes=3, shape=(3, 8, 8), seed=1)
    x, y = data.normalize(data.train.images[:8]), data.train.labels[:8]
    grads = {}
    for k in (None, 3):
        torch.manual_seed(0)
        model = build_model("resnet20", num_classes=3, in_channels=3, input_size=(8, 8), width_mult=0.25)
        gs = attach_gates(model, x[:2], units=False, filters=False, layers=True)
        obj = GateObjective(gs, flip_per_step=k, total_steps=1, seed=5)
        model.train()
        loss, _ = obj.loss_fn(model, x, y)
        loss.backward()
        grads[k] = torch.stack([g.theta.grad.reshape(()) if g.theta.grad is not None else torch.zeros(())
                                for g in gs.gate_list()])
    assert int((grads[None] != 0).sum()) == 9
    chosen = grads[3] != 0
    assert int(chosen.sum()) == 3
    # same model, same samples (the gate noise is drawn before the flips): chosen gates get 9/3 × the flip
    assert torch.allclose(grads[3][chosen], 3.0 * grads[None][chosen], rtol=1e-4, atol=1e-6)


def test_finetune_phase_rounds_theta_once_then_trains_the_deterministic_net(data):
    torch.manual_seed(0)
    model = _mlp()
    gs = attach_gates(model, data.normalize(data.val.images[:2]), inputs=True)
    epochs, steps = 6, 6 * 30
    obj = GateObjective(gs, kappa=2.0, theta_lr=0.05, prune_every=10, total_steps=steps, finetune=0.5, seed=0)
    assert obj.gate_steps == steps // 2

    class _After:  # what happens after rounding: widths fixed, θ fixed at 1, weights still learn
        def __init__(self):
            self.widths, self.fc2 = None, None

        def on_step_end(self, trainer, step, loss):
            if obj.rounded and self.widths is None:
                self.widths, self.fc2 = gs.widths(), model.fc2.weight.detach().clone()
                assert all(bool(g.frozen.all()) and bool((g.theta == 1).all()) for g in gs.gate_list())

    after = _After()
    Trainer(model, data, _config(epochs), callbacks=[obj, after], loss_fn=obj.loss_fn).fit()
    assert obj.rounded and after.widths is not None
    assert 0.0 <= obj.converged_before_rounding <= 1.0
    assert gs.widths() == after.widths  # no removal after rounding
    assert not torch.equal(model.fc2.weight.detach(), after.fc2)  # the rounded net kept training
    # a fine-tune step is one plain pass (no stacked antithetic copies, no θ gradient)
    model.train()
    x, y = data.normalize(data.train.images[:8]), data.train.labels[:8]
    calls = []
    handle = model.fc1.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    loss, logits = obj.loss_fn(model, x, y)
    handle.remove()
    assert calls == [8] and logits.shape == (8, 4)
    loss.backward()
    assert all(g.theta.grad is None for g in gs.gate_list())


def test_distillation_replaces_the_finetune_loss_only_after_rounding(data):
    """distill_alpha > 0: the rounded net's fine-tuning calls the distillation loss (teacher runs on
    each fine-tune batch), the gating phase does not; without a teacher the knob is refused."""
    torch.manual_seed(0)
    teacher = _mlp()
    teacher_batches = []
    teacher.register_forward_hook(lambda m, i, o: teacher_batches.append(o.shape[0]))
    adapter = Adapter(data=data, train_config=_config(4))
    method = GatesMethod(kappa=2.0, theta_lr=0.05, prune_every=10, epochs=4, plots=False, finetune=0.5,
                         distill_alpha=0.5)
    with pytest.raises(ConfigError, match="teacher"):
        method.run(_mlp(), adapter)
    out, record = method.run(_mlp(), adapter, teacher=teacher)
    steps = 4 * 30
    # only the fine-tuning half distils: one teacher pass per fine-tune step of 32 examples
    assert len(teacher_batches) == steps - steps // 2 and set(teacher_batches) == {32}
    assert record["knobs"]["distill_alpha"] == 0.5 and record["params_after"] < record["params_before"]
    with pytest.raises(ValueError, match="distill_alpha"):
        GatesMethod(distill_alpha=1.5)
