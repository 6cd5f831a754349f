"""Training loop: config validation, schedules, callbacks, extra loss, NaN, label smoothing,
rebuild_optimizer, distillation, and learning on the synthetic task."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netrazor.data import make_synthetic
from netrazor.errors import ConfigError, TrainingError
from netrazor.train import Callback, EarlyStopping, LRSchedule, TrainConfig, Trainer, default_config, distillation_loss
from netrazor.train.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_train=512, n_val=256, n_test=128, num_classes=4, seed=0)


def mlp(hidden: int = 32) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(256, hidden), nn.ReLU(), nn.Linear(hidden, 4))


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"lr": -1.0},
        {"lr": float("nan")},
        {"optimizer": "rmsprop"},
        {"schedule": "linear"},
        {"schedule": "step"},  # needs milestones
        {"milestones": (5, 3)},
        {"label_smoothing": 1.0},
        {"augment": "mixup"},
        {"nesterov": True, "optimizer": "adam"},
        {"warmup_epochs": 10, "epochs": 10},
        {"grad_clip": 0.0},
    ],
)
def test_bad_config_raises_config_error(bad):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**bad)
    assert "TrainConfig." in str(err.value)


def test_config_dict_round_trip():
    cfg = TrainConfig(epochs=7, schedule="step", milestones=[3, 5], optimizer="adamw", lr=1e-3)
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.milestones == (3, 5)
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"epochs": 1, "lr_typo": 0.1})


def test_default_recipes_are_documented_pairs():
    assert default_config("resnet20", "cifar10").augment == "crop_flip"
    assert default_config("resnet20", "cifar10").nesterov
    assert default_config("lenet5", "mnist").epochs >= 5
    # unknown pairs fall back to something valid
    cfg = default_config("mystery", "nowhere")
    assert isinstance(cfg, TrainConfig) and cfg.epochs >= 1


# ---------------------------------------------------------------- schedules
def test_cosine_with_warmup_values():
    s = LRSchedule("cosine", total_steps=110, steps_per_epoch=10, warmup_steps=10)
    assert s.factor(0) == pytest.approx(0.1)
    assert s.factor(4) == pytest.approx(0.5)
    assert s.factor(9) == pytest.approx(1.0)
    assert s.factor(10) == pytest.approx(1.0)
    assert s.factor(60) == pytest.approx(0.5)  # half-way through the cosine part
    assert s.factor(110) == pytest.approx(0.0, abs=1e-12)
    assert all(s.factor(i) >= s.factor(i + 1) for i in range(10, 110))


def test_step_and_constant_values():
    s = LRSchedule("step", total_steps=60, steps_per_epoch=10, milestones=(2, 4), gamma=0.1)
    assert s.factor(19) == 1.0
    assert s.factor(20) == pytest.approx(0.1)
    assert s.factor(39) == pytest.approx(0.1)
    assert s.factor(40) == pytest.approx(0.01)
    assert LRSchedule("constant", 50, 10).factor(37) == 1.0


def test_trainer_applies_schedule_every_step(data):
    cfg = TrainConfig(epochs=3, batch_size=128, lr=0.2, schedule="step", milestones=(1, 2), gamma=0.5, warmup_epochs=0.5)
    seen = []

    class LrSpy(Callback):
        def on_step_end(self, trainer, step, loss):
            seen.append((step, trainer.optimizer.param_groups[0]["lr"]))

    trainer = Trainer(mlp(), data, cfg, callbacks=[LrSpy()])
    trainer.fit()
    assert [s for s, _ in seen] == list(range(3 * 4))
    expected = [0.2 * 1 / 2, 0.2 * 2 / 2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05]
    assert [lr for _, lr in seen] == pytest.approx(expected)


# ---------------------------------------------------------------- learning
def test_learns_synthetic_task_well_above_chance(data):
    cfg = TrainConfig(epochs=4, batch_size=64, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    history = Trainer(mlp(), data, cfg).fit()
    assert len(history) == 4
    assert set(history[0]) >= {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s"}
    assert history[-1]["val_acc"] > 0.8  # chance is 0.25
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.parametrize("optimizer,lr", [("adam", 3e-3), ("adamw", 3e-3)])
def test_adam_variants_learn(data, optimizer, lr):
    cfg = TrainConfig(epochs=3, batch_size=64, optimizer=optimizer, lr=lr, weight_decay=1e-4, grad_clip=5.0)
    history = Trainer(mlp(), data, cfg).fit()
    assert history[-1]["val_acc"] > 0.8


def test_label_smoothing_sets_a_loss_floor(data):
    # With smoothing eps over K classes the best achievable cross-entropy is the entropy of the
    # smoothed target; without smoothing the loss on this easy task goes far below that floor.
    eps, k = 0.3, 4
    q_true, q_other = 1 - eps + eps / k, eps / k
    floor = -(q_true * math.log(q_true) + (k - 1) * q_other * math.log(q_other))
    base = TrainConfig(epochs=4, batch_size=64, lr=0.05)
    smooth = Trainer(mlp(), data, base.replace(label_smoothing=eps)).fit()
    plain = Trainer(mlp(), data, base).fit()
    assert smooth[-1]["train_loss"] >= floor - 1e-6
    assert plain[-1]["train_loss"] < floor / 4


def small_convnet() -> nn.Sequential:
    # The second conv has 4 input channels: with 1 channel both layouts have the same strides.
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 256, 4))


class LayoutSpy(Callback):
    """Records the conv weight's memory format during training and at on_train_end; may interrupt."""

    def __init__(self, interrupt_at_epoch=None):
        self.interrupt_at_epoch = interrupt_at_epoch
        self.seen = []

    def on_epoch_start(self, trainer, epoch):
        if epoch == self.interrupt_at_epoch:
            raise KeyboardInterrupt

    def on_step_end(self, trainer, step, loss):
        self.seen.append(("step", trainer.model[3].weight.is_contiguous(memory_format=torch.channels_last)))

    def on_train_end(self, trainer):
        self.seen.append(("end", trainer.model[3].weight.is_contiguous()))


def _plain_layout(model: nn.Module) -> bool:
    return all(t.is_contiguous() for t in [*model.parameters(), *model.buffers()])


def test_channels_last_trains_nhwc_and_hands_the_model_back_contiguous(data):
    model = small_convnet()
    spy = LayoutSpy()
    history = Trainer(model, data, TrainConfig(epochs=3, batch_size=64, lr=0.05, channels_last=True), callbacks=[spy]).fit()
    assert history[-1]["val_acc"] > 0.8
    steps = [v for k, v in spy.seen if k == "step"]
    assert steps and all(steps)  # trained in channels_last
    assert spy.seen[-1] == ("end", True)  # callbacks' on_train_end already see the handed-back layout
    assert _plain_layout(model) and not model[3].weight.is_contiguous(memory_format=torch.channels_last)
    # a layer created afterwards (e.g. by folding) has the same layout as the rest: no mixed formats
    assert model[3].weight.stride() == nn.Conv2d(4, 4, 3, padding=1).weight.stride()


def test_channels_last_model_is_contiguous_after_an_interrupt_and_after_resume(data, tmp_path):
    config = TrainConfig(epochs=2, batch_size=64, lr=0.05, channels_last=True)
    first = small_convnet()
    with pytest.raises(KeyboardInterrupt):
        Trainer(first, data, config, run_dir=tmp_path, callbacks=[LayoutSpy(interrupt_at_epoch=1)]).fit()
    assert _plain_layout(first)  # handed back even when fit raises

    resumed = small_convnet()
    spy = LayoutSpy()
    Trainer(resumed, data, config, run_dir=tmp_path, callbacks=[spy]).fit(resume=True)
    assert [v for k, v in spy.seen if k == "step"] and all(v for k, v in spy.seen if k == "step")
    assert _plain_layout(resumed)

    # a finished run resumed again trains no step, and still hands the model back contiguous
    again = small_convnet()
    spy = LayoutSpy()
    Trainer(again, data, config, run_dir=tmp_path, callbacks=[spy]).fit(resume=True)
    assert spy.seen == [("end", True)] and _plain_layout(again)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), resumed.state_dict().values()))


def test_train_job_with_channels_last_saves_plain_tensors_of_the_trained_model(tmp_path):
    from netrazor.data import load_data
    from netrazor.io import load_tensors
    from netrazor.measure import evaluate
    from netrazor.surgery import load_model
    from netrazor.train.job import train_job

    result = train_job("resnet20", "synthetic", overrides={"epochs": 1, "batch_size": 100, "channels_last": True},
                       width_mult=0.25, out=tmp_path)
    assert result.run.config["train"]["channels_last"] is True
    tensors, _ = load_tensors(result.run.dir / "model.safetensors")
    assert tensors["stem.conv.weight"].dim() == 4 and all(t.is_contiguous() for t in tensors.values())
    model = load_model(result.run.model_path)
    assert _plain_layout(model)
    bundle = load_data("synthetic")
    # the file holds the trained weights: it reproduces the run's own test accuracy
    assert evaluate(model, bundle.test, bundle.mean, bundle.std)["accuracy"] == pytest.approx(result.summary["test_acc"])


def test_crop_flip_augmentation_comes_from_the_bundle(data):
    import dataclasses

    cifar_like = dataclasses.replace(data, augment="crop_flip")
    assert Trainer(mlp(), cifar_like, TrainConfig(epochs=1)).train_loader.augment == "crop_flip"
    assert Trainer(mlp(), cifar_like, TrainConfig(epochs=1, augment="none")).train_loader.augment == "none"
    assert Trainer(mlp(), data, TrainConfig(epochs=1)).train_loader.augment == "none"


# ---------------------------------------------------------------- callbacks
class Recorder(Callback):
    def __init__(self, tag, log):
        self.tag, self.log = tag, log

    def on_train_start(self, trainer):
        self.log.append((self.tag, "train_start"))

    def on_epoch_start(self, trainer, epoch):
        self.log.append((self.tag, "epoch_start", epoch))

    def extra_loss(self, trainer):
        self.log.append((self.tag, "extra_loss"))
        return None

    def on_after_backward(self, trainer):
        self.log.append((self.tag, "after_backward"))

    def on_step_end(self, trainer, step, loss):
        assert isinstance(loss, float)
        self.log.append((self.tag, "step_end", step))

    def on_epoch_end(self, trainer, epoch, metrics):
        assert metrics["epoch"] == epoch and "val_acc" in metrics
        self.log.append((self.tag, "epoch_end", epoch))

    def on_train_end(self, trainer):
        self.log.append((self.tag, "train_end"))


def test_callbacks_called_in_order(data):
    log: list = []
    small = make_synthetic(n_train=256, n_val=64, n_test=64, seed=1)
    Trainer(mlp(), small, TrainConfig(epochs=2, batch_size=128), callbacks=[Recorder("a", log), Recorder("b", log)]).fit()
    expected = [("a", "train_start"), ("b", "train_start")]
    step = 0
    for epoch in range(2):
        expected += [("a", "epoch_start", epoch), ("b", "epoch_start", epoch)]
        for _ in range(2):
            expected += [("a", "extra_loss"), ("b", "extra_loss"), ("a", "after_backward"), ("b", "after_backward"),
                         ("a", "step_end", step), ("b", "step_end", step)]
            step += 1
        expected += [("a", "epoch_end", epoch), ("b", "epoch_end", epoch)]
    expected += [("a", "train_end"), ("b", "train_end")]
    assert log == expected


def test_extra_loss_changes_gradients(data):
    coef = 10.0

    class GradSpy(Callback):
        def __init__(self, penalise):
            self.penalise, self.grad, self.weight = penalise, None, None

        def on_train_start(self, trainer):
            self.weight = trainer.model[1].weight.detach().clone()

        def extra_loss(self, trainer):
            return coef * trainer.model[1].weight.pow(2).sum() if self.penalise else None

        def on_after_backward(self, trainer):
            if self.grad is None:
                self.grad = trainer.model[1].weight.grad.detach().clone()
            trainer.stop_training = True

    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.01, momentum=0.0)
    with_penalty, without = GradSpy(True), GradSpy(False)
    Trainer(mlp(), data, cfg, callbacks=[with_penalty]).fit()
    Trainer(mlp(), data, cfg, callbacks=[without]).fit()
    # d/dw (c * sum w^2) = 2 c w, added to the data gradient of the very same first batch.
    assert torch.allclose(with_penalty.grad - without.grad, 2 * coef * with_penalty.weight, atol=1e-5)


def test_stop_training_and_early_stopping(data):
    stopper = EarlyStopping(monitor="val_acc", patience=1, min_delta=1.0)  # can never improve by 1.0
    history = Trainer(mlp(), data, TrainConfig(epochs=10, batch_size=64), callbacks=[stopper]).fit()
    assert len(history) == 2 and stopper.bad_epochs == 1


# ---------------------------------------------------------------- NaN
def test_nan_loss_raises_and_keeps_last_checkpoint(data, tmp_path):
    class Poison(Callback):
        def extra_loss(self, trainer):
            if trainer.epoch == 1 and trainer.step == trainer.steps_per_epoch + 2:
                return torch.tensor(float("nan"))
            return None

    trainer = Trainer(mlp(), data, TrainConfig(epochs=3, batch_size=64), callbacks=[Poison()], run_dir=tmp_path)
    with pytest.raises(TrainingError) as err:
        trainer.fit()
    msg = str(err.value)
    assert "nan" in msg and "epoch 2" in msg and "batch 3/8" in msg and "learning rate" in msg
    _, index = load_checkpoint(tmp_path)
    assert index["epoch"] == 1 and len(index["history"]) == 1


def test_diverging_lr_raises_training_error(data):
    cfg = TrainConfig(epochs=3, batch_size=64, lr=1e8, momentum=0.9, schedule="constant")
    with pytest.raises(TrainingError, match="Lower the learning rate"):
        Trainer(mlp(), data, cfg).fit()


# ---------------------------------------------------------------- rebuild_optimizer
def _shrink_hidden(model: nn.Sequential, keep: torch.Tensor) -> None:
    """Physically remove hidden units of the MLP (what a gate method does mid-training)."""
    first, last = model[1], model[3]
    new_first = nn.Linear(first.in_features, len(keep))
    new_last = nn.Linear(len(keep), last.out_features)
    with torch.no_grad():
        new_first.weight.copy_(first.weight[keep])
        new_first.bias.copy_(first.bias[keep])
        new_last.weight.copy_(last.weight[:, keep])
        new_last.bias.copy_(last.bias)
    model[1], model[3] = new_first, new_last


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_rebuild_optimizer_after_removing_units(data, optimizer):
    keep = torch.arange(0, 32, 2)
    seen = {}

    class Shrinker(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch != 0:
                return
            old_state = trainer.optimizer.state
            seen["old_w"] = {k: v.clone() for k, v in old_state[trainer.model[1].weight].items()}
            seen["old_last_bias"] = {k: v.clone() for k, v in old_state[trainer.model[3].bias].items()}
            seen["old_first_bias"] = {k: v.clone() for k, v in old_state[trainer.model[1].bias].items()}
            _shrink_hidden(trainer.model, keep)
            seen["outcome"] = trainer.rebuild_optimizer(index_maps={"1.weight": [(0, keep)], "3.weight": [(1, keep)]})
            seen["lr_after"] = trainer.optimizer.param_groups[0]["lr"]
            seen["lr_expected"] = trainer.lr
            new_state = trainer.optimizer.state
            # clone: the optimizer updates its buffers in place as training goes on
            seen["new_w"] = {k: v.clone() for k, v in new_state[trainer.model[1].weight].items()}
            seen["new_last_bias"] = {k: v.clone() for k, v in new_state[trainer.model[3].bias].items()}
            seen["first_bias_has_state"] = trainer.model[1].bias in new_state

    model = mlp(32)
    lr = 0.05 if optimizer == "sgd" else 3e-3
    history = Trainer(model, data, TrainConfig(epochs=3, batch_size=64, optimizer=optimizer, lr=lr), callbacks=[Shrinker()]).fit()
    out = seen["outcome"]
    assert out == {"1.weight": "sliced", "1.bias": "reset", "3.weight": "sliced", "3.bias": "kept"}
    assert not seen["first_bias_has_state"]  # shape changed, no index map -> restarts
    key = "momentum_buffer" if optimizer == "sgd" else "exp_avg"
    assert torch.equal(seen["new_w"][key], seen["old_w"][key][keep])
    assert torch.equal(seen["new_last_bias"][key], seen["old_last_bias"][key])
    assert seen["lr_after"] == pytest.approx(seen["lr_expected"])
    assert model[1].weight.shape == (16, 256)
    assert all(math.isfinite(h["train_loss"]) for h in history)
    assert history[-1]["val_acc"] > 0.6  # chance 0.25
    assert history[2]["train_loss"] < history[1]["train_loss"]  # still learning after the rebuild


# ---------------------------------------------------------------- distillation
def test_distillation_loss_matches_hinton_formula():
    torch.manual_seed(0)
    s = torch.randn(8, 5, requires_grad=True)
    t = torch.randn(8, 5, requires_grad=True)
    y = torch.randint(0, 5, (8,))
    T = 3.0
    p_t = F.softmax(t / T, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / T, 1))).sum(1).mean()
    assert distillation_loss(s, t, temperature=T).item() == pytest.approx((T * T * kl).item(), rel=1e-5)
    mixed = distillation_loss(s, t, y, temperature=T, alpha=0.25)
    assert mixed.item() == pytest.approx((0.25 * T * T * kl + 0.75 * F.cross_entropy(s, y)).item(), rel=1e-5)
    assert distillation_loss(t.detach(), t.detach()).item() == pytest.approx(0.0, abs=1e-6)
    # the hard-label term uses the recipe's label smoothing, like the plain loss
    smoothed = distillation_loss(s, t, y, temperature=T, alpha=0.25, label_smoothing=0.1)
    ce_smooth = F.cross_entropy(s, y, label_smoothing=0.1)
    assert smoothed.item() == pytest.approx((0.25 * T * T * kl + 0.75 * ce_smooth).item(), rel=1e-5)
    assert smoothed.item() != pytest.approx(mixed.item(), rel=1e-4)
    mixed.backward()
    assert s.grad is not None and t.grad is None  # the teacher is not trained
    with pytest.raises(ConfigError):
        distillation_loss(s, t, alpha=0.5)  # needs targets


# ---------------------------------------------------------------- custom param groups
def test_callback_param_groups_get_their_own_lr_and_decay(data):
    class FreezeHeadByLr(Callback):
        def param_groups(self, trainer):
            return [{"params": [("head.weight", trainer.model[3].weight), ("head.bias", trainer.model[3].bias)],
                     "lr_scale": 0.0, "weight_decay": 0.0}]

    model = mlp()
    head_before = model[3].weight.detach().clone()
    body_before = model[1].weight.detach().clone()
    trainer = Trainer(model, data, TrainConfig(epochs=1, batch_size=64, lr=0.05, weight_decay=1e-3), callbacks=[FreezeHeadByLr()])
    trainer.fit()
    assert len(trainer.optimizer.param_groups) == 2
    assert trainer.optimizer.param_groups[1]["weight_decay"] == 0.0
    assert torch.equal(model[3].weight, head_before)  # lr_scale 0: never moves
    assert not torch.equal(model[1].weight, body_before)


def test_fit_is_seeded_and_leaves_the_callers_rng_alone(data):
    class DrawSpy(Callback):
        def __init__(self):
            self.draw = None

        def on_step_end(self, trainer, step, loss):
            if step == 0:
                self.draw = torch.rand(3)

    spies = [DrawSpy(), DrawSpy()]
    for spy, caller_seed in zip(spies, (1, 2)):
        model = mlp()
        torch.manual_seed(caller_seed)  # different caller states before fit
        Trainer(model, data, TrainConfig(epochs=1, batch_size=128, seed=3), callbacks=[spy]).fit()
    assert torch.equal(spies[0].draw, spies[1].draw)  # training's stream comes from config.seed only

    model = mlp()
    before = torch.get_rng_state()
    Trainer(model, data, TrainConfig(epochs=1, batch_size=128, seed=3), callbacks=[DrawSpy()]).fit()
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is untouched
