"""benchmarks.compress_bench: a recipe run through the pipeline becomes one honest benchmark record."""

from __future__ import annotations

import json

import pytest

from benchmarks.compress_bench import build_record, method_name
from netrazor.codec import unpack
from netrazor.measure import evaluate
from netrazor.pipeline import compress, load_recipe, parse_recipe
from netrazor.pipeline.records import RECORD_KEYS, write_record

RECIPE = """
name: tiny-bench
data: {name: synthetic}
model: {factory: "pipeline_factories:tiny_cnn", kwargs: {num_classes: 4}}
seed: 1
train: {epochs: 3, batch_size: 32, lr: 0.05}
stages:
  - train: {}
  - quantise: {tolerance: 0.01}
  - pack: {}
"""


@pytest.fixture(scope="module")
def data():
    from netrazor.data import make_synthetic

    return make_synthetic(n_train=400, n_val=200, n_test=200)


def test_record_holds_the_artifact_bytes_and_the_error_of_the_unpacked_model(tmp_path, data):
    recipe = parse_recipe(RECIPE)
    result = compress(recipe, tmp_path / "run", data=data, latency=False)
    record = build_record(recipe, result)
    assert record["task"] == "tiny-bench" and record["method"] == "train+quantise+pack" and record["seed"] == 1
    assert set(record) <= set(RECORD_KEYS)
    artifact = result.run_dir / "stage-2-pack" / "model.nrz"
    assert record["bytes"] == artifact.stat().st_size
    assert record["bytes_dense"] == result.stages[0]["before"]["bytes"] > record["bytes"]
    assert record["extra"]["ratio"] == pytest.approx(record["bytes_dense"] / record["bytes"])
    # test error is that of the model decoded from the file, not of the model before packing
    model = unpack(artifact)
    assert record["test_error"] == pytest.approx(evaluate(model, data.test, data.mean, data.std)["error"])
    assert record["val_error"] == pytest.approx(evaluate(model, data.val, data.mean, data.std)["error"])
    assert record["compress_seconds"] == pytest.approx(sum(s["seconds"] for s in result.stages))
    path = write_record(record, tmp_path / "results")
    assert path.name == "train+quantise+pack-seed1.json"
    assert json.loads(path.read_text())["bytes"] == record["bytes"]


def test_shipped_recipes_name_their_methods_by_stage():
    assert method_name(load_recipe("mnist-lenet5")).endswith("+quantise+pack")
    assert method_name(load_recipe("mnist-lenet300")).endswith("+quantise+pack")


def test_latency_explanation_times_the_result_next_to_the_recipes_dense_model(data):
    """A result with fewer MACs gets compare's per-layer breakdown and a reason per batch size; the dense
    side is the recipe's own model, built fresh (the same leaf names as the result)."""
    from types import SimpleNamespace

    from torch import nn

    from benchmarks.compress_bench import latency_explanation
    from netrazor.measure import count_macs

    recipe = parse_recipe(RECIPE)
    narrow = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, padding=1),
                           nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 4 * 4, 4))
    record = {"macs": count_macs(narrow, (1, 16, 16)), "macs_dense": 4 * count_macs(narrow, (1, 16, 16)),
              "latency_ms_b1": 1.0, "latency_ms_b1_dense": 1.5, "latency_ms_b64": 1.0, "latency_ms_b64_dense": 2.0}
    extra = latency_explanation(recipe, SimpleNamespace(model=narrow), record, data)
    assert set(extra["latency_reason"]) == {"b1", "b64"}
    names = [row["name"] for row in extra["latency_breakdown"]["b1"]["layers"]]
    assert "0" in names and "7" in names  # the Sequential's conv and linear leaves, on both sides
    assert extra["latency_efficiency"]["b1"] == pytest.approx(1.5 / 4)
    record["macs_dense"] = record["macs"]  # no MAC cut: nothing to explain
    assert latency_explanation(recipe, SimpleNamespace(model=narrow), record, data) == {}
