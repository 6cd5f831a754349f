"""Zoo models through netrazor's one saver (netrazor.surgery.save_model / load_model), and files of
the retired plain zoo format ("netrazor-model" v1) still loading, with clear CheckpointErrors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import netrazor.models
from netrazor.errors import CheckpointError
from netrazor.io import load_tensors, save_tensors, write_json
from netrazor.models import build_model
from netrazor.surgery import load_model, save_model
from netrazor.surgery.serialize import checkpoint_paths, read_header

# Written by the retired netrazor.models.save_model at commit 345bc79 (before the formats merged), with
# non-default weights and BN statistics; reference-outputs.safetensors holds inputs and the outputs
# the models gave then (weights are compared exactly, outputs to float rounding). These files are the
# compatibility promise: never regenerate them.
LEGACY = Path(__file__).parent / "fixtures" / "legacy-zoo"


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


def _write_legacy(model: nn.Module, path: Path) -> tuple[Path, Path]:
    """Write ``model`` the way the retired plain zoo saver did (format "netrazor-model", version 1)."""
    state = model.state_dict()
    weights, meta = path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")
    save_tensors(weights, state, metadata={"format": "netrazor-model", "version": "1"})
    write_json(meta, {"format": "netrazor-model", "version": 1, "spec": model.netrazor_spec,
                      "tensors": {k: list(v.shape) for k, v in state.items()}, "extra": {}})
    return weights, meta


@pytest.mark.parametrize("name, shape", [("lenet5", (1, 28, 28)), ("resnet20", (3, 32, 32)), ("mobilenetv2", (3, 32, 32))])
def test_save_load_round_trip_gives_equal_outputs(tmp_path, name, shape):
    model = _trained_like(build_model(name, width_mult=0.5)).eval()
    header = save_model(model, tmp_path / "ckpt" / "m", extra={"val_error": 0.1})
    weights, meta = checkpoint_paths(tmp_path / "ckpt" / "m")
    doc = json.loads(meta.read_text())
    assert doc == json.loads(json.dumps(header))
    # an unaltered zoo model is kind "zoo" with no changed layers: its spec alone rebuilds it
    assert (doc["format"], doc["kind"], doc["changed"]) == ("netrazor-surgery-model", "zoo", {})
    assert doc["spec"] == model.netrazor_spec and doc["extra"] == {"val_error": 0.1}
    assert doc["input_shape"] == list(shape)
    for path in (tmp_path / "ckpt" / "m", weights, meta):  # any of the three names loads
        loaded = load_model(path)
        assert not loaded.training
        x = torch.randn(3, *shape)
        with torch.no_grad():
            assert torch.equal(model(x), loaded(x))
        assert loaded.netrazor_spec == model.netrazor_spec
    # no temporary files left behind by the atomic writes
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["m.json", "m.safetensors"]


def test_saving_keeps_the_models_train_mode_and_weights(tmp_path):
    model = build_model("lenet300").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    save_model(model, tmp_path / "m")
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("tag, shape", [("lenet300", (1, 8, 8)), ("resnet20", (3, 8, 8))])
def test_files_written_by_the_retired_zoo_saver_still_load(tmp_path, tag, shape):
    meta = json.loads((LEGACY / f"{tag}.json").read_text())
    assert meta["format"] == "netrazor-model" and "kind" not in meta  # really the old layout
    ref, _ = load_tensors(LEGACY / "reference-outputs.safetensors")
    for path in (LEGACY / tag, LEGACY / f"{tag}.json", LEGACY / f"{tag}.safetensors"):
        model = load_model(path)
        assert not model.training and model.netrazor_spec == meta["spec"]
        with torch.no_grad():  # (thread count may differ from the run that wrote the outputs)
            torch.testing.assert_close(model(ref[f"{tag}.input"]), ref[f"{tag}.output"], rtol=1e-5, atol=1e-6)
    header = read_header(LEGACY / tag)  # normalised to the kind "zoo" header it is equivalent to
    assert (header["kind"], header["changed"], header["legacy_format"]) == ("zoo", {}, "netrazor-model")
    assert header["extra"]["written_by"].startswith("netrazor.models.save_model")

    # Re-saving migrates the file to the one format; weights and outputs are unchanged.
    new = save_model(model, tmp_path / tag)
    assert (new["format"], new["kind"], new["changed"], new["spec"]) == ("netrazor-surgery-model", "zoo", {}, meta["spec"])
    old_tensors, _ = load_tensors(LEGACY / f"{tag}.safetensors")
    new_tensors, _ = load_tensors(tmp_path / f"{tag}.safetensors")
    assert old_tensors.keys() == new_tensors.keys()
    assert all(torch.equal(old_tensors[k], new_tensors[k]) for k in old_tensors)
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / tag)(ref[f"{tag}.input"]), ref[f"{tag}.output"],
                                   rtol=1e-5, atol=1e-6)


def test_legacy_file_written_now_loads_like_the_fixture(tmp_path):
    model = _trained_like(build_model("lenet5", width_mult=0.5)).eval()
    _write_legacy(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("write", [save_model, _write_legacy], ids=["format", "legacy"])
def test_weights_of_another_shape_raise_checkpoint_error(tmp_path, write):
    write(build_model("lenet5"), tmp_path / "a")
    write(build_model("lenet5", width_mult=0.5), tmp_path / "b")
    # Pair a's spec with b's weights: every name matches, shapes do not.
    (tmp_path / "b.json").write_text((tmp_path / "a.json").read_text())
    with pytest.raises(CheckpointError, match="has shape"):
        load_model(tmp_path / "b")


@pytest.mark.parametrize("write", [save_model, _write_legacy], ids=["format", "legacy"])
def test_weights_of_another_architecture_raise_checkpoint_error(tmp_path, write):
    write(build_model("lenet5"), tmp_path / "a")
    write(build_model("lenet300"), tmp_path / "b")
    (tmp_path / "b.json").write_text((tmp_path / "a.json").read_text())
    with pytest.raises(CheckpointError, match="different models"):
        load_model(tmp_path / "b")


@pytest.mark.parametrize("write", [save_model, _write_legacy], ids=["format", "legacy"])
def test_truncated_or_missing_weights_raise_checkpoint_error(tmp_path, write):
    write(build_model("lenet300"), tmp_path / "m")
    weights = tmp_path / "m.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(tmp_path / "m")
    weights.unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "m")


def test_corrupt_or_missing_json_raise_checkpoint_error(tmp_path):
    _, meta = _write_legacy(build_model("lenet300"), tmp_path / "m")
    text = meta.read_text()
    good = json.loads(text)
    meta.write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tmp_path / "m")
    meta.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a netrazor model"):
        load_model(tmp_path / "m")
    meta.write_text(json.dumps(dict(good, spec=None)))
    with pytest.raises(CheckpointError, match="no model spec"):
        load_model(tmp_path / "m")
    meta.write_text(json.dumps(dict(good, version=2)))
    with pytest.raises(CheckpointError, match="version 2"):
        load_model(tmp_path / "m")
    meta.write_text(json.dumps(dict(good, spec={"name": "resnet99", "kwargs": {}})))
    with pytest.raises(CheckpointError, match="cannot build"):
        load_model(tmp_path / "m")
    meta.unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "m")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "never-saved")


def test_checkpoint_paths_strip_known_suffixes(tmp_path):
    expected = (tmp_path / "run.v1.safetensors", tmp_path / "run.v1.json")
    assert checkpoint_paths(tmp_path / "run.v1") == expected
    assert checkpoint_paths(tmp_path / "run.v1.json") == expected
    assert checkpoint_paths(str(tmp_path / "run.v1.safetensors")) == expected
    assert checkpoint_paths(tmp_path / "run.v1.pt2") == expected


@pytest.mark.parametrize(
    "alter",
    [
        lambda m: setattr(m, "relu1", nn.Identity()),  # a linearised rectifier: no tensor changes
        lambda m: (setattr(m, "fc1", nn.Linear(800, 30)), setattr(m, "fc2", nn.Linear(30, 10))),  # narrower
    ],
    ids=["relu-swapped", "narrowed"],
)
def test_altered_zoo_models_are_saved_with_their_changes_not_a_stale_spec(tmp_path, alter):
    model = build_model("lenet5").eval()
    alter(model)
    assert hasattr(model, "netrazor_spec")  # surgery keeps the attribute
    header = save_model(model, tmp_path / "m")
    assert header["kind"] == "zoo" and header["changed"]  # the spec alone would rebuild the original
    loaded = load_model(tmp_path / "m")
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_the_zoo_no_longer_offers_a_second_saver():
    assert "save_model" not in netrazor.models.__all__ and "load_model" not in netrazor.models.__all__
    with pytest.raises(AttributeError, match="netrazor.surgery.save_model"):
        netrazor.models.save_model  # noqa: B018
    with pytest.raises(AttributeError, match="netrazor.surgery.load_model"):
        netrazor.models.load_model  # noqa: B018

