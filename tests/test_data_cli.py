"""`netrazor data info` / `data fetch` through the real CLI entry point."""

from __future__ import annotations

import gzip
import struct

import numpy as np

from netrazor.cli import main


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_info_synthetic_json(capsys):
    assert main(["data", "info", "synthetic", "--json", "--entropy"]) == 0
    out = capsys.readouterr().out
    assert '"splits"' in out and '"entropy"' in out and '"mean"' in out


def test_info_named_set_from_files_and_missing_set_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NETRAZOR_DATA", str(tmp_path))
    monkeypatch.setenv("NETRAZOR_OFFLINE", "1")
    assert main(["data", "info", "mnist", "--no-fetch"]) == 2
    assert "netrazor data fetch mnist" in capsys.readouterr().err.replace("\n", " ")
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    for stem, shape in (("train-images-idx3-ubyte", (30, 4, 4)), ("train-labels-idx1-ubyte", (30,)),
                        ("t10k-images-idx3-ubyte", (5, 4, 4)), ("t10k-labels-idx1-ubyte", (5,))):
        (folder / (stem + ".gz")).write_bytes(gzip.compress(idx_bytes(rng.integers(0, 10, shape))))
    assert main(["data", "info", "mnist", "--no-fetch", "--val-size", "10", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"train": 20' in out and '"val": 10' in out and '"test": 5' in out


def test_fetch_rejects_wrong_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NETRAZOR_DATA", str(tmp_path / "root"))
    src = tmp_path / "src"
    src.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (src / stem).write_bytes(idx_bytes(np.zeros((2, 2, 2) if "images" in stem else (2,))))
    assert main(["data", "fetch", "mnist", "--source", str(src)]) == 2
    assert "MD5" in capsys.readouterr().err
