"""`netrazor pack` / `netrazor unpack` end to end on a saved zoo model."""

from __future__ import annotations

import importlib

import json

import pytest
import torch

models = importlib.import_module("netrazor.models")
from netrazor.cli import main  # noqa: E402


def _saved_lenet(tmp_path):
    from netrazor.surgery import save_model

    torch.manual_seed(0)
    model = models.build_model("lenet300")
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_((torch.rand_like(p) < 0.05).float())
    save_model(model, tmp_path / "lenet")
    return model


def test_pack_prints_every_stage_and_unpack_rebuilds_exactly(tmp_path, capsys):
    _saved_lenet(tmp_path)
    out = tmp_path / "m.nrz"
    assert main(["pack", str(tmp_path / "lenet"), "-o", str(out), "--bits", "3"]) == 0
    text = capsys.readouterr().out
    for stage in ("dense float32", "after removal", "after quantisation", "encoded (.nrz)", "Shannon bound"):
        assert stage in text
    size = out.stat().st_size
    assert f"to {size} bytes" in text and "compressed from" in text

    assert main(["pack", str(tmp_path / "lenet"), "-o", str(out), "--bits", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["encoded_bytes"] == size and report["ratio"] > 20

    assert main(["unpack", str(out), "--check"]) == 0
    assert "checksums valid" in capsys.readouterr().out
    assert main(["unpack", str(out), "-o", str(tmp_path / "restored")]) == 0
    from netrazor.codec import unpack
    from netrazor.surgery import load_model

    restored = load_model(tmp_path / "restored" / "model")
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(restored.eval()(x), unpack(out)(x))


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    _saved_lenet(tmp_path)
    bad = tmp_path / "bad.nrz"
    bad.write_bytes(b"NRZ1" + b"\x00" * 100)
    assert main(["unpack", str(bad), "--check"]) == 2
    assert main(["pack", str(tmp_path / "lenet"), "-o", str(tmp_path / "x.nrz"), "--tolerance", "0.01"]) == 2
    assert main(["pack", str(tmp_path / "lenet"), "-o", str(tmp_path / "x.nrz"), "--bits", "3", "--tolerance", "0.1"]) == 2
    assert main(["pack", str(tmp_path / "lenet"), "-o", str(tmp_path / "x.nrz"), "--bits", "12"]) == 2
    assert main(["pack", str(tmp_path / "lenet"), "-o", str(tmp_path / "x.nrz"), "--budget-bits", "9000"]) == 2
    assert main(["pack", str(tmp_path / "lenet"), "-o", str(tmp_path / "x.nrz"), "--bits", "3", "--budget-bits", "9000"]) == 2
    assert "not --bits and --budget-bits" in " ".join(capsys.readouterr().err.split())  # rich wraps lines


def test_pack_with_tolerance_searches_bits_on_validation_data(tmp_path, capsys, monkeypatch):
    import netrazor.data
    from netrazor.data import make_synthetic

    calls = []

    def fake_load_data(name, *a, **kw):  # the CLI's --data, served by the synthetic set (no network)
        calls.append(name)
        return make_synthetic(n_train=64, n_val=128, n_test=16, num_classes=10, shape=(1, 28, 28), seed=0)

    monkeypatch.setattr(netrazor.data, "load_data", fake_load_data)
    _saved_lenet(tmp_path)
    out = tmp_path / "t.nrz"
    assert main(["pack", str(tmp_path / "lenet"), "-o", str(out), "--tolerance", "0.02", "--data", "mnist", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert calls == ["mnist"]
    assert set(report["bits"]) == {"fc1", "fc2", "fc3"} and all(1 <= b <= 8 for b in report["bits"].values())
    from netrazor.codec import read_nrz

    assert read_nrz(out)[0]["quantisation"]["bits"] == report["bits"]


def test_pack_with_budget_bits_fits_the_budget(tmp_path, capsys, monkeypatch):
    import netrazor.data
    from netrazor.data import make_synthetic
    from netrazor.quant.search import layer_bit_cost

    monkeypatch.setattr(netrazor.data, "load_data", lambda name, *a, **kw: make_synthetic(
        n_train=64, n_val=128, n_test=16, num_classes=10, shape=(1, 28, 28), seed=0))
    model = _saved_lenet(tmp_path)
    nnz = {n: int((m.weight != 0).sum()) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    budget = sum(layer_bit_cost(k, 3, 1) for k in nnz.values())  # room for 3 bits on average, not 8
    out = tmp_path / "b.nrz"
    assert main(["pack", str(tmp_path / "lenet"), "-o", str(out), "--budget-bits", str(budget), "--data", "mnist", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sum(layer_bit_cost(nnz[n], b, 1) for n, b in report["bits"].items()) <= budget
    from netrazor.codec import read_nrz

    assert read_nrz(out)[0]["quantisation"]["bits"] == report["bits"]


def test_unpack_of_a_surgery_model_writes_a_loadable_checkpoint(tmp_path, capsys):
    surgery = importlib.import_module("netrazor.surgery")
    from netrazor.codec import pack

    model = models.build_model("lenet5")
    x = torch.randn(2, 1, 28, 28)
    small = surgery.remove_channels(model, {"conv2": [1, 2, 3]}, x)
    pack(small, tmp_path / "s.nrz", bits=4)
    assert main(["unpack", str(tmp_path / "s.nrz"), "-o", str(tmp_path / "out")]) == 0
    restored = surgery.load_model(tmp_path / "out" / "model")
    from netrazor.codec import unpack

    assert torch.equal(restored(x), unpack(tmp_path / "s.nrz")(x))


def test_pack_table_prints_a_shannon_bound_for_index_set_sections(tmp_path):
    from rich.console import Console

    from netrazor.codec import pack
    from netrazor.commands.codec import _report_tables, section_bound_bytes

    class Picked(torch.nn.Module):  # a first layer that reads only some input pixels (like gated LeNet-300)
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(90, 8)
            self.register_buffer("input_index", torch.sort(torch.randperm(300, generator=torch.Generator().manual_seed(0))[:90])[0])

    report = pack(Picked(), tmp_path / "p.nrz", bits=3)
    rows = {row["name"]: row for row in report.tensors}
    index_row = rows["input_index"]
    assert index_row["kind"] == "index-set" and index_row["position_bound_bits"] > 0
    bound = section_bound_bytes(index_row)
    # 90 members of 300: the mask's order-0 entropy is ~0.88 bit per element, ~33 bytes; never above the section
    assert 20 < bound <= index_row["section_bytes"]
    assert rows["fc.bias"]["kind"] == "raw" and section_bound_bytes(rows["fc.bias"]) is None  # 8 floats: raw
    console = Console(record=True, width=200)
    _, layers = _report_tables(report)
    console.print(layers)
    text = console.export_text()
    cells = {ln.split("│")[1].strip(): [c.strip() for c in ln.split("│")[1:-1]]
             for ln in text.splitlines() if ln.count("│") > 2}
    assert cells["input_index"][-1] == f"{bound:,.0f}"  # the bound column, not "—"
    assert cells["fc.bias"][-1] == "none (raw)"
    assert "raw sections code no stream" in text
