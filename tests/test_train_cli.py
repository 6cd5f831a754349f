"""`netrazor train` / `netrazor runs` end to end on the synthetic task (no files needed)."""

from __future__ import annotations

import json

from netrazor.cli import main
from netrazor.pipeline.store import RunStore


def test_train_then_resume_and_list(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--model", "lenet300", "--data", "synthetic", "--epochs", "2", "--lr", "0.05",
                 "--out", str(out)]) == 0
    rows = RunStore(out).list()
    assert len(rows) == 1 and rows[0]["status"] == "done" and rows[0]["model"] == "lenet300"
    summary = rows[0]["summary"]
    assert summary["epochs"] == 2 and summary["test_acc"] > 0.5 and summary["val_acc"] > 0.5
    run_dir = out / rows[0]["id"]
    assert json.loads((run_dir / "config.json").read_text())["train"]["lr"] == 0.05
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert (run_dir / "model.safetensors").exists() and (run_dir / "model.json").exists()

    # resuming a finished run is a no-op that keeps its history
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    # --resume refuses new settings
    assert main(["train", "--resume", str(run_dir), "--epochs", "5"]) == 2

    capsys.readouterr()
    assert main(["runs", "--root", str(out), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in listed] == [rows[0]["id"]]
    assert main(["runs", "--root", str(out), "show", rows[0]["id"], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["summary"]["test_acc"] == summary["test_acc"] and len(shown["metrics"]) == 2


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    assert main(["train", "--model", "lenet300", "--data", "synthetic", "--lr", "-1", "--out", str(tmp_path)]) == 2
    assert "lr" in capsys.readouterr().err
    assert main(["train", "--model", "nosuchnet", "--data", "synthetic", "--out", str(tmp_path)]) == 2
    assert main(["runs", "--root", str(tmp_path), "show", "missing-run"]) == 2
