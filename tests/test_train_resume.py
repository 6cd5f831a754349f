"""Checkpoint/resume: a run interrupted mid-epoch and resumed ends with exactly the weights of an
uninterrupted run (torch.equal), in-process (KeyboardInterrupt) and across processes (SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from netrazor.data import make_synthetic
from netrazor.errors import CheckpointError
from netrazor.io import load_tensors
from netrazor.train import Callback, TrainConfig, Trainer
from netrazor.train.checkpoint import load_checkpoint


def small_convnet() -> nn.Module:
    # BatchNorm (buffers) and Dropout (global torch RNG) make resume exactness non-trivial.
    torch.manual_seed(123)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(6 * 8 * 8, 4),
    )


class Interrupt(Callback):
    """Raises KeyboardInterrupt at (epoch, batch) when armed; keeps a counter in its state."""

    def __init__(self, at: tuple[int, int] | None):
        self.at = at
        self.steps_seen = 0

    def on_step_end(self, trainer, step, loss):
        self.steps_seen += 1
        if self.at is not None and (trainer.epoch, step - trainer.epoch * trainer.steps_per_epoch) == self.at:
            raise KeyboardInterrupt

    def state_dict(self):
        return {"steps_seen": self.steps_seen, "marker": torch.arange(3.0)}

    def load_state_dict(self, state):
        assert torch.equal(state["marker"], torch.arange(3.0))
        self.steps_seen = state["steps_seen"]


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_train=384, n_val=96, n_test=32, seed=3)


CONFIGS = {
    "sgd-nesterov-warmup-crop": TrainConfig(epochs=4, batch_size=64, lr=0.05, nesterov=True, weight_decay=5e-4,
                                            warmup_epochs=0.5, augment="crop_flip", label_smoothing=0.1),
    "adam-step": TrainConfig(epochs=4, batch_size=64, optimizer="adam", lr=2e-3, schedule="step", milestones=(2,),
                             weight_decay=1e-4, grad_clip=1.0),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_resume_after_mid_epoch_interrupt_is_exact(data, tmp_path, name):
    cfg = CONFIGS[name]
    reference = small_convnet()
    ref_cb = Interrupt(None)
    ref_history = Trainer(reference, data, cfg, callbacks=[ref_cb], run_dir=tmp_path / "ref").fit()

    model = small_convnet()
    with pytest.raises(KeyboardInterrupt):
        Trainer(model, data, cfg, callbacks=[Interrupt((2, 3))], run_dir=tmp_path / "cut").fit()
    _, index = load_checkpoint(tmp_path / "cut")
    assert index["epoch"] == 2  # mid-epoch kill: the last completed epoch's checkpoint stays

    # Resume into a freshly built model, after disturbing the global RNGs on purpose.
    torch.manual_seed(999)
    resumed_model = small_convnet()
    cb = Interrupt(None)
    history = Trainer(resumed_model, data, cfg, callbacks=[cb], run_dir=tmp_path / "cut").fit(resume=True)

    for (k, a), (_, b) in zip(reference.state_dict().items(), resumed_model.state_dict().items()):
        assert torch.equal(a, b), k
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in ref_history]
    assert cb.steps_seen == ref_cb.steps_seen  # callback state resumed too


def test_resume_rejects_a_different_config(data, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=64)
    Trainer(small_convnet(), data, cfg.replace(epochs=1), run_dir=tmp_path).fit()
    with pytest.raises(CheckpointError, match="epochs"):
        Trainer(small_convnet(), data, cfg, run_dir=tmp_path).fit(resume=True)


def test_resume_of_a_finished_run_returns_its_history(data, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=64)
    first = Trainer(small_convnet(), data, cfg, run_dir=tmp_path).fit()
    model = small_convnet()
    again = Trainer(model, data, cfg, run_dir=tmp_path).fit(resume=True)
    assert again == first
    tensors, _ = load_tensors(next(tmp_path.glob("checkpoint-e*.safetensors")))
    assert torch.equal(model[0].weight, tensors["model.0.weight"])


def test_corrupt_checkpoint_raises_checkpoint_error(data, tmp_path):
    Trainer(small_convnet(), data, TrainConfig(epochs=1, batch_size=64), run_dir=tmp_path).fit()
    tensor_file = next(tmp_path.glob("checkpoint-e*.safetensors"))
    tensor_file.write_bytes(tensor_file.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        Trainer(small_convnet(), data, TrainConfig(epochs=1, batch_size=64), run_dir=tmp_path).fit(resume=True)


def test_checkpoint_holds_no_pickle(data, tmp_path):
    Trainer(small_convnet(), data, TrainConfig(epochs=1, batch_size=64, optimizer="adam", lr=1e-3), run_dir=tmp_path).fit()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-e0001.safetensors", "checkpoint.json"]
    index = json.loads((tmp_path / "checkpoint.json").read_text())
    assert index["epoch"] == 1 and index["param_names"][0] == "0.weight"


# ------------------------------------------------------------------ SIGKILL across processes
SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from torch import nn
    torch.set_num_threads(1)
    from netrazor.data import make_synthetic
    from netrazor.io import save_tensors
    from netrazor.train import Callback, TrainConfig, Trainer

    mode, run_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]

    class Killer(Callback):
        def on_step_end(self, trainer, step, loss):
            if mode == "kill" and trainer.epoch == 2 and step == 2 * trainer.steps_per_epoch + 2:
                os.kill(os.getpid(), signal.SIGKILL)

    torch.manual_seed(7)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 4))
    data = make_synthetic(n_train=384, n_val=96, n_test=32, seed=5)
    cfg = TrainConfig(epochs=4, batch_size=64, lr=0.05, nesterov=True, weight_decay=1e-4, augment="crop_flip")
    Trainer(model, data, cfg, callbacks=[Killer()], run_dir=run_dir).fit(resume=(mode == "resume"))
    save_tensors(out, dict(model.state_dict()))
    """
)


def test_resume_after_sigkill_is_exact(tmp_path):
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def run(mode: str, run_dir: Path, out: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), mode, str(run_dir), str(out)], env=env,
                              capture_output=True, text=True, timeout=120)

    ref = run("plain", tmp_path / "ref", tmp_path / "ref.safetensors")
    assert ref.returncode == 0, ref.stderr
    killed = run("kill", tmp_path / "cut", tmp_path / "never.safetensors")
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "never.safetensors").exists()
    resumed = run("resume", tmp_path / "cut", tmp_path / "resumed.safetensors")
    assert resumed.returncode == 0, resumed.stderr
    a, _ = load_tensors(tmp_path / "ref.safetensors")
    b, _ = load_tensors(tmp_path / "resumed.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_state_flatten_round_trip_is_exact():
    import math

    from netrazor.train.state import flatten, unflatten

    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3)}, 5: {}},
             "param_groups": [{"betas": (0.9, 0.999), "params": [0, 5], "foreach": None, "lr": float("inf")}],
             "nested": [1, "a", (2, [3.5])]}
    tensors: dict = {}
    as_json = json.loads(json.dumps(flatten(state, "optim", tensors)))  # really through JSON
    back = unflatten(as_json, tensors)
    assert set(back["state"]) == {0, 5} and torch.equal(back["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    assert back["param_groups"][0]["betas"] == (0.9, 0.999) and math.isinf(back["param_groups"][0]["lr"])
    assert back["nested"] == [1, "a", (2, [3.5])]
    with pytest.raises(CheckpointError):
        flatten({"bad": object()}, "x", {})
