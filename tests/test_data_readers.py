"""Readers: IDX (plain/gz, corrupt), CIFAR-10 binary, image-folder trees and their tar.gz."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from netrazor.data.cifar import RECORD_BYTES, TEST_FILES, TRAIN_FILES, parse_cifar_batch, read_cifar_binary
from netrazor.data.folder import read_image_folder
from netrazor.data.idx import parse_idx, read_idx, read_idx_folder
from netrazor.errors import DataError


def idx_bytes(array: np.ndarray) -> bytes:
    """Write an IDX file by hand from the format description (type 0x08 = ubyte)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def small_idx():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(7,), dtype=np.uint8)
    return images, labels


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, small_idx, compress):
    images, _ = small_idx
    raw = idx_bytes(images)
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    out = read_idx(path)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (7, 5, 4)
    assert torch.equal(out, torch.from_numpy(images))


def test_idx_other_dtype_big_endian():
    values = np.array([[1, -2], [300, -40000]], dtype=">i4")
    raw = bytes([0, 0, 0x0C, 2]) + struct.pack(">II", 2, 2) + values.tobytes()
    assert parse_idx(raw).tolist() == [[1, -2], [300, -40000]]


def test_idx_truncated_raises_clear_error(small_idx):
    raw = idx_bytes(small_idx[0])
    with pytest.raises(DataError, match="truncated.*fetch"):
        parse_idx(raw[:-10], "train-images")
    with pytest.raises(DataError, match="trailing"):
        parse_idx(raw + b"xx")
    with pytest.raises(DataError, match="not an IDX file"):
        parse_idx(b"\x00\x01\x08\x03" + raw[4:])
    with pytest.raises(DataError, match="too short"):
        parse_idx(b"\x00\x00")
    with pytest.raises(DataError, match="ends early"):
        parse_idx(raw[:9])


def test_idx_truncated_gzip_raises(small_idx):
    gz = gzip.compress(idx_bytes(small_idx[0]))
    with pytest.raises(DataError, match="damaged gzip"):
        parse_idx(gz[: len(gz) // 2], "x.gz")


def test_idx_folder_and_mismatched_labels(tmp_path, small_idx):
    images, labels = small_idx
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images[:3]))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels[:3]))
    raw = read_idx_folder(tmp_path)
    assert tuple(raw["train_images"].shape) == (7, 1, 5, 4)
    assert raw["train_labels"].dtype == torch.int64
    assert raw["test_labels"].tolist() == labels[:3].tolist()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels[:2]))
    with pytest.raises(DataError, match="do not belong together"):
        read_idx_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        read_idx_folder(tmp_path)


def cifar_records(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    pixels = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    raw = b"".join(bytes([labels[i]]) + pixels[i].tobytes() for i in range(n))
    return raw, labels, pixels


def test_cifar_binary_batch_and_folder(tmp_path):
    raw, labels, pixels = cifar_records(4, 0)
    images, got_labels = parse_cifar_batch(raw)
    assert torch.equal(images, torch.from_numpy(pixels)) and got_labels.tolist() == labels.tolist()
    with pytest.raises(DataError, match="3073"):
        parse_cifar_batch(raw[:-1])
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for i, name in enumerate(TRAIN_FILES + TEST_FILES):
        folder.joinpath(name).write_bytes(cifar_records(2, i)[0])
    out = read_cifar_binary(tmp_path)
    assert tuple(out["train_images"].shape) == (10, 3, 32, 32) and len(out["test_labels"]) == 2
    # The red plane is the first 1024 pixel bytes of a record.
    first = folder.joinpath("data_batch_1.bin").read_bytes()
    assert out["train_images"][0, 0].flatten().tolist() == list(first[1:1025])
    # Straight from a tar.gz, without extracting.
    archive = tmp_path / "c.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-bin")
    from_tar = read_cifar_binary(archive)
    assert torch.equal(from_tar["train_images"], out["train_images"])
    folder.joinpath("test_batch.bin").write_bytes(b"\x00" * (RECORD_BYTES + 5))
    with pytest.raises(DataError, match="truncated"):
        read_cifar_binary(tmp_path)


def write_png_tree(root: Path, mode: str = "RGB") -> dict[str, torch.Tensor]:
    """A tiny train/test tree of 6x5 PNGs with known pixels; returns the expected arrays by path."""
    expected = {}
    rng = np.random.default_rng(1)
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "ant"):
            d = root / "tree" / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                shape = (5, 6, 3) if mode == "RGB" else (5, 6)
                arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
                Image.fromarray(arr, mode).save(d / f"{i}.png")
                expected[f"{split}/{cls}/{i}"] = torch.from_numpy(arr if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return expected


def check_tree(out: dict, expected: dict, channels: int) -> None:
    assert out["classes"] == ["ant", "cat"]  # sorted folder names
    assert tuple(out["train_images"].shape) == (6, channels, 5, 6)
    assert tuple(out["test_images"].shape) == (4, channels, 5, 6)
    # Deterministic order: by class index then file name.
    assert out["train_labels"].tolist() == [0, 0, 0, 1, 1, 1]
    img = out["train_images"][3]  # cat/0.png
    assert torch.equal(img.squeeze(0) if channels == 1 else img, expected["train/cat/0"])
    assert torch.equal(out["test_images"][1].reshape(expected["test/ant/1"].shape), expected["test/ant/1"])


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_image_folder_tree_and_targz(tmp_path, mode):
    expected = write_png_tree(tmp_path, mode)
    channels = 3 if mode == "RGB" else 1
    check_tree(read_image_folder(tmp_path / "tree"), expected, channels)
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "tree", arcname="mydata")
    check_tree(read_image_folder(archive), expected, channels)


def test_image_folder_errors(tmp_path):
    write_png_tree(tmp_path)
    # A test class without training images.
    (tmp_path / "tree" / "test" / "bee").mkdir()
    Image.new("RGB", (6, 5)).save(tmp_path / "tree" / "test" / "bee" / "0.png")
    with pytest.raises(DataError, match="bee"):
        read_image_folder(tmp_path / "tree")
    (tmp_path / "tree" / "test" / "bee" / "0.png").unlink()
    Image.new("RGB", (7, 5)).save(tmp_path / "tree" / "train" / "cat" / "9.png")
    with pytest.raises(DataError, match="resize"):
        read_image_folder(tmp_path / "tree")
    (tmp_path / "tree" / "train" / "cat" / "9.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="not a readable image"):
        read_image_folder(tmp_path / "tree")
    with pytest.raises(DataError, match="train/<class>"):
        read_image_folder(tmp_path / "tree" / "train")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(gzip.compress(b"x" * 1000)[:20])
    with pytest.raises(DataError, match="tar"):
        read_image_folder(bad)


def test_tar_reader_skips_links_and_reads_members_only(tmp_path):
    expected = write_png_tree(tmp_path)
    archive = tmp_path / "t.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "tree", arcname="t")
        link = tarfile.TarInfo("t/train/cat/evil.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    out = read_image_folder(archive)
    assert len(out["train_labels"]) == 6
    assert not (tmp_path / "t").exists()  # nothing extracted to disk
    check_tree(out, expected, 3)
