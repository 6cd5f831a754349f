"""Zoo checkpoints: safetensors + JSON spec round trip, and clear CheckpointErrors for bad files."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from netrazor.errors import CheckpointError, ModelError
from netrazor.models import build_model, load_model, save_model
from netrazor.models.io import checkpoint_paths


def _trained_like(model: nn.Module) -> nn.Module:
    # Non-default weights and BN statistics, so a loader that ignored the file would be caught.
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if b.is_floating_point():
                b.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name, shape", [("lenet5", (1, 28, 28)), ("resnet20", (3, 32, 32)), ("mobilenetv2", (3, 32, 32))])
def test_save_load_round_trip_gives_equal_outputs(tmp_path, name, shape):
    model = _trained_like(build_model(name, width_mult=0.5)).eval()
    weights, meta = save_model(model, tmp_path / "ckpt" / "m", extra={"val_error": 0.1})
    assert weights.name == "m.safetensors" and meta.name == "m.json"
    doc = json.loads(meta.read_text())
    assert doc["spec"] == model.netrazor_spec and doc["extra"] == {"val_error": 0.1}
    for path in (tmp_path / "ckpt" / "m", weights, meta):  # any of the three names loads
        loaded = load_model(path).eval()
        x = torch.randn(3, *shape)
        with torch.no_grad():
            assert torch.equal(model(x), loaded(x))
        assert loaded.netrazor_spec == model.netrazor_spec
    # no temporary files left behind by the atomic writes
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["m.json", "m.safetensors"]


def test_weights_of_another_shape_raise_checkpoint_error(tmp_path):
    save_model(build_model("lenet5"), tmp_path / "a")
    save_model(build_model("lenet5", width_mult=0.5), tmp_path / "b")
    # Pair a's spec with b's weights: every name matches, shapes do not.
    (tmp_path / "b.json").write_text((tmp_path / "a.json").read_text())
    with pytest.raises(CheckpointError, match="has shape"):
        load_model(tmp_path / "b")


def test_weights_of_another_architecture_raise_checkpoint_error(tmp_path):
    save_model(build_model("lenet5"), tmp_path / "a")
    save_model(build_model("lenet300"), tmp_path / "b")
    (tmp_path / "b.json").write_text((tmp_path / "a.json").read_text())
    with pytest.raises(CheckpointError, match="different models"):
        load_model(tmp_path / "b")


def test_truncated_weights_raise_checkpoint_error(tmp_path):
    weights, _ = save_model(build_model("lenet300"), tmp_path / "m")
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(tmp_path / "m")


def test_corrupt_or_missing_json_raise_checkpoint_error(tmp_path):
    _, meta = save_model(build_model("lenet300"), tmp_path / "m")
    text = meta.read_text()
    meta.write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tmp_path / "m")
    meta.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="no model spec"):
        load_model(tmp_path / "m")
    # Same spec key but another format (surgery's altered models): rebuilding from the spec alone
    # would silently undo the changes, so the zoo loader refuses and names the right loader.
    meta.write_text(json.dumps({"format": "netrazor-surgery-model", "spec": json.loads(text)["spec"]}))
    with pytest.raises(CheckpointError, match="surgery.load_model"):
        load_model(tmp_path / "m")
    meta.write_text(json.dumps({"spec": {"name": "resnet99", "kwargs": {}}}))
    with pytest.raises(CheckpointError, match="cannot build"):
        load_model(tmp_path / "m")
    meta.unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "m")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "never-saved")


def test_missing_weights_raise_checkpoint_error(tmp_path):
    weights, _ = save_model(build_model("lenet300"), tmp_path / "m")
    weights.unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "m")


def test_saving_a_non_zoo_model_raises_model_error(tmp_path):
    with pytest.raises(ModelError, match="surgery.save_model"):
        save_model(nn.Linear(3, 2), tmp_path / "m")
    assert not any(tmp_path.iterdir())


def test_checkpoint_paths_strip_known_suffixes(tmp_path):
    expected = (tmp_path / "run.v1.safetensors", tmp_path / "run.v1.json")
    assert checkpoint_paths(tmp_path / "run.v1") == expected
    assert checkpoint_paths(tmp_path / "run.v1.json") == expected
    assert checkpoint_paths(str(tmp_path / "run.v1.safetensors")) == expected


@pytest.mark.parametrize(
    "alter",
    [
        lambda m: setattr(m, "relu1", nn.Identity()),  # a linearised rectifier: no tensor changes
        lambda m: (setattr(m, "fc1", nn.Linear(800, 30)), setattr(m, "fc2", nn.Linear(30, 10))),  # narrower
    ],
    ids=["relu-swapped", "narrowed"],
)
def test_altered_zoo_models_are_refused_not_saved_with_a_stale_spec(tmp_path, alter):
    model = build_model("lenet5")
    alter(model)
    assert hasattr(model, "netrazor_spec")  # surgery keeps the attribute
    with pytest.raises(ModelError, match="surgery.save_model"):
        save_model(model, tmp_path / "m")
    assert not any(tmp_path.iterdir())
