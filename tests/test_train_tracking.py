"""Optional TensorBoard / MLflow loggers: the values they store equal the Trainer's history, and
without the package the constructor is a clear ConfigError with the install hint."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from torch import nn

from netrazor.data import make_synthetic
from netrazor.errors import ConfigError
from netrazor.train import Trainer
from netrazor.train.tracking import MLflowLogger, TensorBoardLogger, numeric_metrics, tracking_callbacks

LOGGED = ["train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s"]


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_train=256, n_val=128, n_test=64, num_classes=4, seed=0)


def fit_two_epochs(data, callback) -> list[dict]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 4))
    cfg = {"epochs": 2, "lr": 0.05, "batch_size": 64, "schedule": "cosine", "seed": 0}
    return Trainer(model, data, cfg, callbacks=[callback]).fit()


def test_numeric_metrics_skips_epoch_nonnumbers_and_nan():
    row = {"epoch": 3, "val_acc": 0.5, "lr": 1, "stopped": True, "name": "x", "val_loss": float("nan")}
    assert numeric_metrics(row) == {"val_acc": 0.5, "lr": 1.0}


def test_tensorboard_logs_the_history(data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path / "tb")
    history = fit_two_epochs(data, logger)
    assert logger.writer is None  # closed at train end
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert set(LOGGED) <= set(acc.Tags()["scalars"])
    for key in LOGGED:
        events = acc.Scalars(key)
        assert [e.step for e in events] == [0, 1]
        # TensorBoard stores scalars as float32
        assert [e.value for e in events] == pytest.approx([h[key] for h in history], rel=1e-6)
    assert history[1]["lr"] < history[0]["lr"]  # the cosine decay is what got logged


def test_mlflow_logs_the_history(data, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # mlflow puts a default artifact folder in the working directory
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLflowLogger(uri, experiment="tracking-test", run_name="two-epochs")
    history = fit_two_epochs(data, logger)
    client = MlflowClient(uri)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "two-epochs"
    assert run.data.params["epochs"] == "2" and run.data.params["lr"] == "0.05"
    assert client.get_experiment(run.info.experiment_id).name == "tracking-test"
    for key in LOGGED:
        points = sorted(client.get_metric_history(logger.run_id, key), key=lambda m: m.step)
        assert [m.step for m in points] == [0, 1]
        assert [m.value for m in points] == pytest.approx([h[key] for h in history], rel=1e-12)


def test_cli_train_writes_tensorboard_and_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from netrazor.cli import main
    from netrazor.pipeline.store import RunStore

    out, tb = tmp_path / "runs", tmp_path / "tb"
    assert main(["train", "--model", "lenet300", "--data", "synthetic", "--epochs", "1", "--lr", "0.05",
                 "--out", str(out), "--tensorboard", str(tb)]) == 0
    run_dir = out / RunStore(out).list()[0]["id"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(tb))
    acc.Reload()
    assert [e.value for e in acc.Scalars("val_acc")] == pytest.approx([r["val_acc"] for r in rows], rel=1e-6)
    # a resume without --tensorboard still matches the checkpoint (loggers are not Trainer callbacks)
    assert main(["train", "--resume", str(run_dir)]) == 0


@pytest.mark.parametrize(
    "make, package",
    [(lambda tmp: TensorBoardLogger(tmp / "tb"), "tensorboard"),
     (lambda tmp: MLflowLogger(f"sqlite:///{tmp / 'm.db'}"), "mlflow"),
     (lambda tmp: tracking_callbacks(mlflow="sqlite:///x.db"), "mlflow")],
)
def test_missing_package_is_config_error_with_install_hint(tmp_path, monkeypatch, make, package):
    # A None entry in sys.modules makes `import package` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, package, None)
    if package == "tensorboard":
        monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError) as err:
        make(tmp_path)
    assert f"pip install {package}" in str(err.value) and "netrazor[tracking]" in str(err.value)


def test_no_options_no_loggers_nothing_imported():
    assert tracking_callbacks() == []
