"""Run store: folder layout, metrics lines, SQLite index round trip, reindex, lookups."""

from __future__ import annotations

import importlib

import json
import sqlite3

import pytest
import torch
from torch import nn

from netrazor.errors import CheckpointError, ConfigError
from netrazor.io import load_tensors
from netrazor.pipeline.store import RunStore


def test_create_log_summary_and_index_round_trip(tmp_path):
    store = RunStore(tmp_path / "runs")
    run = store.create("train", {"model": "lenet5", "data": "mnist", "train": {"epochs": 2, "lr": 0.05}})
    assert run.dir == tmp_path / "runs" / run.id and "lenet5" in run.id and "mnist" in run.id
    assert run.config["train"] == {"epochs": 2, "lr": 0.05} and run.config["kind"] == "train"

    rows = [{"epoch": 0, "train_loss": 0.5, "val_acc": 0.9}, {"epoch": 1, "train_loss": 0.25, "val_acc": torch.tensor(0.95)}]
    for r in rows:
        run.log_epoch(r)
    assert [m["epoch"] for m in run.metrics()] == [0, 1]
    assert run.metrics()[1]["val_acc"] == pytest.approx(0.95)
    assert run.row["status"] == "running"

    run.write_summary({"val_acc": 0.95, "test_acc": 0.94, "params": 431080})
    assert json.loads((run.dir / "summary.json").read_text())["test_acc"] == 0.94

    # A fresh store object reads the same index (the round trip is through SQLite, not memory).
    again = RunStore(tmp_path / "runs")
    listed = again.list()
    assert len(listed) == 1
    row = listed[0]
    assert (row["id"], row["kind"], row["model"], row["data"], row["status"]) == (run.id, "train", "lenet5", "mnist", "done")
    assert row["summary"] == {"val_acc": 0.95, "test_acc": 0.94, "params": 431080}
    with sqlite3.connect(tmp_path / "runs" / "index.sqlite") as con:
        cols = [c[1] for c in con.execute("PRAGMA table_info(runs)")]
    assert cols == ["id", "kind", "model", "data", "created", "status", "summary"]

    assert again.get(run.id).summary()["val_acc"] == 0.95
    assert again.get(run.dir).id == run.id  # a folder path works too


def test_list_filters_and_orders(tmp_path):
    store = RunStore(tmp_path)
    a = store.create("train", {"model": "lenet300", "data": "mnist"}, run_id="a-run")
    b = store.create("compress", {"model": "lenet5", "data": "mnist"}, run_id="b-run")
    a.set_status("interrupted")
    assert [r["id"] for r in store.list()] == ["a-run", "b-run"]
    assert [r["id"] for r in store.list(kind="compress")] == ["b-run"]
    assert store.list()[0]["status"] == "interrupted"
    with pytest.raises(ConfigError):
        b.set_status("exploded")
    with pytest.raises(ConfigError):
        store.create("train", {}, run_id="a-run")  # folder exists
    with pytest.raises(CheckpointError, match="netrazor runs"):
        store.get("nope")


def test_write_metrics_replaces_lines_and_tolerates_a_cut_line(tmp_path):
    run = RunStore(tmp_path).create("train", {"model": "m", "data": "d"})
    run.log_epoch({"epoch": 0})
    run.log_epoch({"epoch": 1})
    run.write_metrics([{"epoch": 0}])  # resumed trainer restored only epoch 0
    assert run.metrics() == [{"epoch": 0}]
    with open(run.dir / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 1, "train_lo')  # crash mid-line
    assert run.metrics() == [{"epoch": 0}]


def test_save_model_zoo_and_reindex(tmp_path):
    from netrazor.models import build_model
    from netrazor.surgery import load_model

    store = RunStore(tmp_path)
    run = store.create("train", {"model": "lenet300", "data": "mnist"})
    model = build_model("lenet300")
    assert run.save_model(model, extra={"note": "test"}) == run.dir / "model.safetensors"
    assert (run.dir / "model.safetensors").exists() and (run.dir / "model.json").exists()
    header = json.loads((run.dir / "model.json").read_text())  # netrazor's one model format
    assert (header["format"], header["kind"], header["changed"]) == ("netrazor-surgery-model", "zoo", {})
    assert header["spec"] == model.netrazor_spec and header["extra"] == {"note": "test"}
    loaded = load_model(run.model_path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    run.write_summary({"test_acc": 0.5})

    (tmp_path / "index.sqlite").unlink()
    assert store.reindex() == 1
    rows = store.list()
    assert rows[0]["id"] == run.id and rows[0]["status"] == "done" and rows[0]["summary"] == {"test_acc": 0.5}


def test_save_model_of_a_non_zoo_module(tmp_path):
    surgery = importlib.import_module("netrazor.surgery")
    run = RunStore(tmp_path).create("train", {"model": "custom", "data": "synthetic"})
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    run.save_model(model, example_input=torch.zeros(1, 1, 4, 4))
    tensors, _ = load_tensors(run.dir / "model.safetensors")
    assert torch.equal(tensors["1.weight"], model[1].weight.detach())
    assert json.loads((run.dir / "model.json").read_text())["kind"] == "graph"
    x = torch.randn(2, 1, 4, 4)
    with torch.no_grad():
        assert torch.equal(surgery.load_model(run.model_path)(x), model(x))


def test_save_model_of_a_channels_last_model_writes_plain_tensors(tmp_path):
    from netrazor.models import build_model

    run = RunStore(tmp_path).create("train", {"model": "resnet20", "data": "cifar10"})
    model = build_model("resnet20", width_mult=0.25).to(memory_format=torch.channels_last)
    run.save_model(model)
    tensors, _ = load_tensors(run.dir / "model.safetensors")
    # safetensors refuses non-contiguous storage: the store must write the values in plain layout
    assert model.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(tensors["stem.conv.weight"], model.stem.conv.weight.detach())
