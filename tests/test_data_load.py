"""load_data: split, statistics, cache round trip, missing-data errors, fetch checks, real data."""

from __future__ import annotations

import gzip
import struct
import tarfile
import time

import numpy as np
import pytest
import torch
from PIL import Image

import netrazor.data.datasets as datasets
from netrazor.data import DataBundle, data_root, fetch, load_data
from netrazor.data.datasets import channel_stats, make_bundle, split_indices
from netrazor.data.fetch import cifar10_local_candidates, is_fetched
from netrazor.errors import DataError


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fake_mnist(folder, n_train=60, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 6, 6), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, (n_train,), dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 6, 6), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, (n_test,), dtype=np.uint8),
    }
    for name, arr in arrays.items():
        (folder / (name + ".gz")).write_bytes(gzip.compress(idx_bytes(arr)))
    return arrays


@pytest.fixture
def isolated_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv("NETRAZOR_DATA", str(root))
    monkeypatch.setenv("NETRAZOR_OFFLINE", "1")
    return root


def test_split_is_deterministic_disjoint_and_complete():
    tr, va = split_indices(100, 20, seed=0)
    tr2, va2 = split_indices(100, 20, seed=0)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    assert len(va) == 20 and len(tr) == 80
    assert set(tr.tolist()).isdisjoint(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(100))
    assert not torch.equal(split_indices(100, 20, seed=1)[1], va)
    with pytest.raises(DataError, match="val_size"):
        split_indices(10, 10)


def test_channel_stats_match_float_computation():
    images = torch.randint(0, 256, (30, 3, 5, 5), dtype=torch.uint8)
    mean, std = channel_stats(images)
    x = images.float() / 255
    assert np.allclose(mean, x.mean(dim=(0, 2, 3)).tolist(), atol=1e-6)
    assert np.allclose(std, x.std(dim=(0, 2, 3)).tolist(), atol=1e-6)


def test_named_dataset_split_and_cache_round_trip(isolated_root, monkeypatch):
    arrays = write_fake_mnist(isolated_root / "mnist")
    bundle = load_data("mnist", val_size=15, fetch=False)
    assert isinstance(bundle, DataBundle) and bundle.name == "mnist"
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (45, 15, 20)
    assert bundle.input_shape == (1, 6, 6) and bundle.augment == "none" and bundle.num_classes == 10
    # train and val are disjoint pieces of the official training set.
    official = torch.from_numpy(arrays["train-images-idx3-ubyte"]).unsqueeze(1)
    tr, va = split_indices(60, 15, 0)
    assert torch.equal(bundle.val.images, official[va]) and torch.equal(bundle.train.images, official[tr])
    assert torch.equal(bundle.test.labels, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    cache = isolated_root / "mnist" / "cache.safetensors"
    assert cache.is_file() and cache.read_bytes()[:8] != b"\x80\x04"  # safetensors, not pickle

    # Second load must come from the cache: make decoding impossible and compare.
    def no_decode(*a, **k):
        raise AssertionError("decoded again although the cache is fresh")

    monkeypatch.setattr(datasets, "_read_named", no_decode)
    again = load_data("mnist", val_size=15, fetch=False)
    assert torch.equal(again.train.images, bundle.train.images) and torch.equal(again.val.labels, bundle.val.labels)
    assert again.mean == bundle.mean

    # A changed raw file makes the cache stale; a corrupt cache is rebuilt, not trusted.
    monkeypatch.undo()
    monkeypatch.setenv("NETRAZOR_DATA", str(isolated_root))
    write_fake_mnist(isolated_root / "mnist", n_train=70, seed=1)
    assert len(load_data("mnist", val_size=15, fetch=False).train) == 55
    cache.write_bytes(b"garbage")
    assert len(load_data("mnist", val_size=15, fetch=False).train) == 55


def test_missing_dataset_names_the_fetch_command(isolated_root):
    with pytest.raises(DataError, match="netrazor data fetch fashion-mnist"):
        load_data("fashion-mnist", fetch=False)
    with pytest.raises(DataError, match="unknown data set"):
        load_data("imagenet-xl")


def test_fetch_checks_content_checksums(isolated_root, tmp_path):
    src = tmp_path / "src"
    write_fake_mnist(src)
    with pytest.raises(DataError, match="MD5"):
        fetch("mnist", source=src)
    assert not is_fetched("mnist")
    with pytest.raises(DataError, match="does not exist"):
        fetch("mnist", source=tmp_path / "nope")
    bogus = tmp_path / "cifar.tar.gz"
    bogus.write_bytes(b"not the archive")
    with pytest.raises(DataError, match="neither the canonical"):
        fetch("cifar10", source=bogus)


def test_data_root_follows_environment(isolated_root):
    assert data_root() == isolated_root


def test_path_dataset_from_png_targz_is_cached(isolated_root, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("a", "b"):
            d = tmp_path / "tree" / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(d / f"{i}.png")
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "tree", arcname="tiny")
    bundle = load_data(str(archive), val_size=2)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (10, 2, 4)
    assert bundle.classes == ["a", "b"] and bundle.input_shape == (3, 4, 4) and bundle.name == "tiny"
    assert list((isolated_root / "custom").glob("*/cache.safetensors"))
    monkeypatch.setattr(datasets, "read_path", lambda *a, **k: (_ for _ in ()).throw(AssertionError("not cached")))
    assert torch.equal(load_data(str(archive), val_size=2).train.images, bundle.train.images)


def test_synthetic_by_name():
    b = load_data("synthetic")
    assert b.name == "synthetic" and len(b.train) > 0


# --------------------------------------------------------------------------- real data (skips)
@pytest.mark.parametrize("name,shape,mean0", [("mnist", (1, 28, 28), 0.1307), ("fashion-mnist", (1, 28, 28), 0.286)])
def test_real_idx_datasets_if_present(name, shape, mean0):
    if not is_fetched(name):
        pytest.skip(f"{name} not fetched here; run `netrazor data fetch {name}`")
    t = time.perf_counter()
    b = load_data(name, fetch=False)
    elapsed = time.perf_counter() - t
    assert (len(b.train), len(b.val), len(b.test)) == (55000, 5000, 10000)
    assert b.input_shape == shape and b.num_classes == 10
    assert abs(b.mean[0] - mean0) < 0.002
    assert torch.bincount(b.test.labels).min() >= 800  # all ten classes present
    assert elapsed < 5.0  # from the cache (first load may decode; still well under this)


def test_real_cifar10_if_present():
    if not is_fetched("cifar10") and not any(p.is_file() for p in cifar10_local_candidates()):
        pytest.skip("no CIFAR-10 archive here; run `netrazor data fetch cifar10 --source PATH`")
    if not is_fetched("cifar10") or not (data_root() / "cifar10" / "cache.safetensors").is_file():
        pytest.skip("CIFAR-10 not decoded yet (takes ~6 s once); run `netrazor data info cifar10`")
    b = load_data("cifar10", fetch=False)
    assert (len(b.train), len(b.val), len(b.test)) == (45000, 5000, 10000)
    assert b.input_shape == (3, 32, 32) and b.augment == "crop_flip" and b.classes[0] == "airplane"
    # Published CIFAR-10 channel means: 0.4914, 0.4822, 0.4465 (the JPEG copy matches closely).
    assert np.allclose(b.mean, (0.4914, 0.4822, 0.4465), atol=0.005)
    assert torch.bincount(b.test.labels).tolist() == [1000] * 10


def test_path_folder_cache_notices_nested_edits(isolated_root, tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for cls in ("x", "y"):
            d = tmp_path / "tree" / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(d / f"{i}.png")
    first = load_data(str(tmp_path / "tree"), val_size=1)
    assert len(first.train) == 5 and first.input_shape == (1, 4, 4)
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "tree" / "train" / "y" / "9.png")
    assert len(load_data(str(tmp_path / "tree"), val_size=1).train) == 6


def test_path_cifar_binary_archive_is_detected(isolated_root, tmp_path):
    from netrazor.data.cifar import TEST_FILES, TRAIN_FILES

    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in TRAIN_FILES + TEST_FILES:
        rows = [bytes([int(rng.integers(0, 10))]) + rng.integers(0, 256, 3072, dtype=np.uint8).tobytes() for _ in range(3)]
        (folder / name).write_bytes(b"".join(rows))
    (folder / "batches.meta.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-bin")
    b = load_data(str(archive), val_size=5)
    assert (len(b.train), len(b.val), len(b.test)) == (10, 5, 3)
    assert b.input_shape == (3, 32, 32) and b.classes[3] == "c3"
