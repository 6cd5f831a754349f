"""Save / load without pickle, in a fresh process; mismatched or hostile files fail clearly."""

from __future__ import annotations

import importlib

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from netrazor.errors import CheckpointError, SurgeryError
from netrazor.io import load_tensors, save_tensors
from netrazor.surgery import (activation_names, fold_linear_sections, load_model, prunable_groups, remove_channels,
                              replace_activation, save_model)
from test_surgery_support import TEST_MODELS, make

LOADER = """
import sys, torch
from netrazor.io import load_tensors, save_tensors
from netrazor.surgery import load_model
inputs, _ = load_tensors(sys.argv[1])
out = {}
for name in sys.argv[3:]:
    model = load_model(sys.argv[2] + "/" + name, trust_export=name.startswith("export"))
    with torch.no_grad():
        out[name] = model(inputs[name])
save_tensors(sys.argv[1] + ".out", out)
"""


def _fresh_process_outputs(tmp_path: Path, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Load every saved model in a NEW python process (nothing shared but the files)."""
    save_tensors(tmp_path / "inputs.safetensors", inputs)
    subprocess.run([sys.executable, "-c", LOADER, str(tmp_path / "inputs.safetensors"), str(tmp_path), *inputs],
                   check=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, timeout=120)
    out, _ = load_tensors(tmp_path / "inputs.safetensors.out")
    return out


def _variants(name):
    model, x = make(name)
    groups = prunable_groups(model, x)
    pruned = remove_channels(model, {g.root: list(range(0, g.size, 3)) for g in groups}, x)
    lin = copy.deepcopy(pruned)
    for a in activation_names(lin)[:2]:
        replace_activation(lin, a)
    folded, _ = fold_linear_sections(lin, x)
    return x, {"plain": model, "pruned": pruned, "folded": folded}


def test_test_models_round_trip_in_a_fresh_process(tmp_path):
    inputs, expected = {}, {}
    for name in TEST_MODELS:
        x, variants = _variants(name)
        for tag, model in variants.items():
            key = f"{name}-{tag}"
            header = save_model(model, tmp_path / key)
            assert header["kind"] == "graph"
            with torch.no_grad():
                expected[key] = model(x)
            inputs[key] = x
    got = _fresh_process_outputs(tmp_path, inputs)
    for key, ref in expected.items():
        torch.testing.assert_close(got[key], ref, rtol=1e-6, atol=1e-6, msg=key)
    # no pickle on disk: a JSON header and a safetensors file per model
    assert not list(tmp_path.glob("*.pt*"))
    header = json.loads((tmp_path / "resnet-folded.json").read_text())
    assert header["format"] == "netrazor-surgery-model"


def test_weights_that_do_not_match_the_architecture_fail(tmp_path):
    x, variants = _variants("cnn")
    save_model(variants["plain"], tmp_path / "a")
    save_model(variants["pruned"], tmp_path / "b")
    (tmp_path / "a.safetensors").write_bytes((tmp_path / "b.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="has shape .* but the architecture"):
        load_model(tmp_path / "a")
    tensors, _ = load_tensors(tmp_path / "b.safetensors")
    tensors.pop(next(iter(tensors)))
    save_tensors(tmp_path / "b.safetensors", tensors)
    with pytest.raises(CheckpointError, match="missing"):
        load_model(tmp_path / "b")


def test_truncated_weights_fail(tmp_path):
    _, variants = _variants("mlp")
    save_model(variants["plain"], tmp_path / "m")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "m")


def test_hostile_graph_is_refused(tmp_path):
    _, variants = _variants("mlp")
    save_model(variants["plain"], tmp_path / "m")
    header = json.loads((tmp_path / "m.json").read_text())
    node = next(n for n in header["graph"]["nodes"] if n["op"] == "call_module")
    node["op"], node["target"] = "call_function", "os.system"
    (tmp_path / "m.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="not whitelisted"):
        load_model(tmp_path / "m")
    header["graph"]["modules"]["0"] = {"type": "builtins.eval", "args": {}}
    node["op"], node["target"] = "call_module", "0"
    (tmp_path / "m.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="whitelisted layers"):
        load_model(tmp_path / "m")


def test_unlisted_layers_fall_back_to_torch_export_behind_a_trust_flag(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 2)).eval()  # GELU is not whitelisted
    x = torch.randn(3, 6)
    with pytest.raises(SurgeryError, match="example_input"):
        save_model(model, tmp_path / "export-g")
    header = save_model(model, tmp_path / "export-g", example_input=x)
    assert header["kind"] == "export"
    with pytest.raises(CheckpointError, match="trust_export"):
        load_model(tmp_path / "export-g")
    got = _fresh_process_outputs(tmp_path, {"export-g": x})
    with torch.no_grad():
        torch.testing.assert_close(got["export-g"], model(x))


def test_unaltered_zoo_model_and_a_retired_plain_zoo_file_load_in_a_fresh_process(tmp_path):
    models = importlib.import_module("netrazor.models")
    model = models.build_model("lenet300").eval()
    header = save_model(model, tmp_path / "z")
    assert (header["kind"], header["changed"]) == ("zoo", {})  # one format: no separate plain zoo saver
    # a file of the retired "netrazor-model" format (tests/fixtures/legacy-zoo, see test_models_io.py)
    legacy = Path(__file__).parent / "fixtures" / "legacy-zoo"
    for suffix in (".json", ".safetensors"):
        shutil.copy(legacy / f"lenet300{suffix}", tmp_path / f"legacy{suffix}")
    ref, _ = load_tensors(legacy / "reference-outputs.safetensors")
    x = torch.randn(2, 1, 28, 28)
    got = _fresh_process_outputs(tmp_path, {"z": x, "legacy": ref["lenet300.input"]})
    with torch.no_grad():
        torch.testing.assert_close(got["z"], model(x))
    torch.testing.assert_close(got["legacy"], ref["lenet300.output"], rtol=1e-5, atol=1e-6)


def test_zoo_model_with_a_branch_swapped_for_a_zero_branch_saves_as_zoo(tmp_path):
    models = importlib.import_module("netrazor.models")
    structures = importlib.import_module("netrazor.methods.gates.structures")
    model = models.build_model("resnet20").eval()
    model.layer2[1].branch = structures.ZeroBranch()  # what the gates method does to a removed layer
    header = save_model(model, tmp_path / "zb")
    assert header["kind"] == "zoo"
    assert header["changed"] == {"layer2.1.branch": {"type": "ZeroBranch", "args": {}}}
    x = torch.randn(2, 3, 32, 32)
    got = _fresh_process_outputs(tmp_path, {"zb": x})
    with torch.no_grad():
        torch.testing.assert_close(got["zb"], model(x))
