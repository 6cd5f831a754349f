"""ONNX export of plain, pruned and folded models, checked against onnxruntime; the CLI command."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

from netrazor.cli import main  # noqa: E402
from netrazor.errors import SurgeryError  # noqa: E402
from netrazor.surgery import export_onnx, save_model  # noqa: E402
from test_surgery_serialize import _variants  # noqa: E402
from test_surgery_support import TEST_MODELS  # noqa: E402


@pytest.mark.parametrize("name", sorted(TEST_MODELS))
def test_export_matches_onnxruntime(name, tmp_path):
    x, variants = _variants(name)
    for tag, model in variants.items():
        report = export_onnx(model, tmp_path / f"{tag}.onnx", tuple(x.shape[1:]))
        assert report["rel_diff"] <= 1e-4 and report["max_abs_diff"] >= 0
        onnx.checker.check_model(str(tmp_path / f"{tag}.onnx"))


def test_parity_failure_raises_and_leaves_no_file(tmp_path):
    x, variants = _variants("mlp")
    with pytest.raises(SurgeryError, match="onnxruntime output differs"):
        export_onnx(variants["plain"], tmp_path / "m.onnx", tuple(x.shape[1:]), rtol=-1.0)
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export(tmp_path, capsys):
    x, variants = _variants("resnet")
    save_model(variants["folded"], tmp_path / "ck", example_input=x)
    rc = main(["export", str(tmp_path / "ck"), "--onnx", str(tmp_path / "ck.onnx"), "--json"])
    assert rc == 0
    assert (tmp_path / "ck.onnx").stat().st_size > 1000
    assert "max_abs_diff" in capsys.readouterr().out
    save_model(variants["plain"], tmp_path / "noshape")
    assert main(["export", str(tmp_path / "noshape"), "--onnx", str(tmp_path / "n.onnx")]) == 2  # no input shape
    assert main(["export", str(tmp_path / "noshape"), "--onnx", str(tmp_path / "n.onnx"), "--input-shape", "3,16,16"]) == 0
