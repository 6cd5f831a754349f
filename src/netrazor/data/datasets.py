"""``load_data``: a data set by name or path -> DataBundle with a fixed validation split.

Decoding happens once: the decoded uint8 train/test tensors are kept in
``<root>/<name>/cache.safetensors`` (safetensors, never pickle) and later loads read that file
only. The cache remembers the names and sizes of the raw files it was built from and is rebuilt
when they change (or when it is unreadable).

Validation split: ``val_size`` examples (default 5000) drawn from the official training set by a
permutation seeded with ``seed`` (default 0); the rest is ``train``. The official test set is
``test``, untouched. Per-channel mean/std are computed on the carved ``train`` split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from netrazor.data.cifar import is_cifar_binary, read_cifar_binary
from netrazor.data.fetch import (
    _check_name,
    cifar10_archive,
    data_root,
    dataset_dir,
    fetch as fetch_dataset,
    fetch_command,
    is_fetched,
)
from netrazor.data.folder import Progress, read_image_folder
from netrazor.data.idx import IDX_STEMS, find_idx_file, read_idx_folder
from netrazor.data.types import DataBundle, ImageSet, make_synthetic
from netrazor.errors import CheckpointError, DataError
from netrazor.io import load_tensors, save_tensors

log = logging.getLogger(__name__)

CACHE_NAME = "cache.safetensors"
CACHE_FORMAT = "netrazor-data-cache/1"
DEFAULT_VAL_SIZE = 5000

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CLASSES = {"mnist": [str(i) for i in range(10)], "fashion-mnist": FASHION_CLASSES}
# Default training augmentation per data set (DataBundle.augment).
AUGMENT = {"mnist": "none", "fashion-mnist": "none", "cifar10": "crop_flip"}


# ----------------------------------------------------------------------------------------- cache
def _fingerprint(paths: list[Path]) -> str:
    """Names, sizes and mtimes of the raw files a cache was built from (cheap to re-check on every load)."""
    rows = []
    for p in sorted(paths):
        files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
        rows += [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return json.dumps(rows)


def save_cache(path: Path, raw: dict, fingerprint: str) -> None:
    tensors = {k: raw[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}
    meta = {"format": CACHE_FORMAT, "classes": json.dumps(raw["classes"]), "fingerprint": fingerprint}
    save_tensors(path, tensors, metadata=meta)


def load_cache(path: Path, fingerprint: str | None) -> dict | None:
    """The cached decoded tensors, or ``None`` when absent, stale or unreadable."""
    if not path.is_file():
        return None
    try:
        tensors, meta = load_tensors(path)
    except CheckpointError as exc:
        log.warning("data cache %s is unreadable (%s); rebuilding it", path, exc)
        return None
    if meta.get("format") != CACHE_FORMAT or (fingerprint is not None and meta.get("fingerprint") != fingerprint):
        log.info("data cache %s is stale; rebuilding it", path)
        return None
    needed = ("train_images", "train_labels", "test_images", "test_labels")
    if any(k not in tensors for k in needed):
        return None
    return {**{k: tensors[k] for k in needed}, "classes": json.loads(meta.get("classes", "[]"))}


def _tree_fingerprint(folder: Path) -> str:
    """Count, total size and newest mtime of every file under ``folder``: an edit anywhere shows."""
    stats = [f.stat() for f in folder.rglob("*") if f.is_file()]
    return json.dumps([len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)])


# ----------------------------------------------------------------------------------------- raw readers
def _raw_sources(name: str, folder: Path) -> list[Path]:
    if name == "cifar10":
        archive = cifar10_archive(folder)
        return [archive] if archive else []
    found = [find_idx_file(folder, stem) for stem in IDX_STEMS.values()]
    return [p for p in found if p is not None]


def read_path(source: Path, progress: Progress | None = None) -> dict:
    """Decode a local source: IDX folder, CIFAR binary folder/archive, or image-folder tree/archive."""
    if source.is_dir():
        if all(find_idx_file(source, stem) for stem in IDX_STEMS.values()):
            raw = read_idx_folder(source)
            return {**raw, "classes": [str(i) for i in range(int(raw["train_labels"].max()) + 1)]}
        if is_cifar_binary(source):
            return read_cifar_binary(source)
        return read_image_folder(source, progress)
    if source.is_file():
        if _archive_has_cifar_batches(source):
            return read_cifar_binary(source)
        return read_image_folder(source, progress)
    raise DataError(f"{source} does not exist; give a data set name ({', '.join(AUGMENT)}) or an existing path.")


def _archive_has_cifar_batches(path: Path) -> bool:
    """Peek at the first members of a tar: the canonical binary archive holds ``*.bin`` batches."""
    import tarfile

    try:
        with tarfile.open(path, "r|*") as tar:
            for i, member in enumerate(tar):
                if member.name.endswith(".bin"):
                    return True
                if i >= 8:
                    break
    except (tarfile.TarError, OSError, EOFError):
        return False  # read_image_folder raises the clear error
    return False


def _read_named(name: str, folder: Path, progress: Progress | None) -> dict:
    if name == "cifar10":
        archive = cifar10_archive(folder)
        return read_path(archive, progress)
    raw = read_idx_folder(folder)
    return {**raw, "classes": CLASSES[name]}


def load_raw(name: str, root: str | os.PathLike | None = None, fetch: bool = True,
             progress: Progress | None = None) -> dict:
    """Decoded train/test tensors of a named data set (from the cache when it is fresh)."""
    name = _check_name(name)
    folder = dataset_dir(name, root)
    if not is_fetched(name, folder.parent):
        if not fetch:
            raise DataError(
                f"{name} is not in {folder}; run `{fetch_command(name)}` (add --root {folder.parent} if you use "
                "a non-default root), or load with fetch=True."
            )
        fetch_dataset(name, folder.parent, progress=progress)
    fingerprint = _fingerprint(_raw_sources(name, folder))
    cache = folder / CACHE_NAME
    raw = load_cache(cache, fingerprint)
    if raw is None:
        raw = _read_named(name, folder, progress)
        save_cache(cache, raw, fingerprint)
    return raw


def load_raw_path(source: str | os.PathLike, progress: Progress | None = None,
                  root: str | os.PathLike | None = None) -> dict:
    """Decoded tensors of a local tree/archive, cached under ``<root or data_root()>/custom/<digest>/``."""
    source = Path(source).expanduser().resolve()
    if not source.exists():
        raise DataError(f"{source} does not exist; give a data set name ({', '.join(AUGMENT)}) or an existing path.")
    stat = source.stat()
    key = hashlib.sha256(f"{source}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = (Path(root).expanduser() if root else data_root()) / "custom" / key / CACHE_NAME
    fingerprint = _fingerprint([source]) if source.is_file() else _tree_fingerprint(source)
    raw = load_cache(cache, fingerprint)
    if raw is None:
        raw = read_path(source, progress)
        try:
            save_cache(cache, raw, fingerprint)
        except OSError as exc:  # a read-only home must not stop the load
            log.warning("could not write data cache %s (%s)", cache, exc)
    return raw


# ----------------------------------------------------------------------------------------- split + stats
def split_indices(n: int, val_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint (train, val) indices of ``range(n)``: val is ``val_size`` draws of a seeded permutation.

    Train indices are sorted (their order does not matter: loaders shuffle). Val indices stay in
    permutation order, so any first-N slice of the validation split is an unbiased draw even when
    the source stores images class by class (the CIFAR-10 archive does).
    """
    if not 0 <= val_size < n:
        raise DataError(f"val_size={val_size} must be in [0, {n}) for a training set of {n} images; lower it.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return perm[val_size:].sort().values, perm[:val_size]


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std in [0, 1] units from 256-bin histograms (no float copy of the set)."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        n = hist.sum()
        mean = (hist * values).sum() / n
        var = (hist * (values - mean) ** 2).sum() / max(n - 1, 1)  # unbiased, like Tensor.std
        means.append(float(mean))
        stds.append(max(float(var.sqrt()), 1e-6))
    return tuple(means), tuple(stds)


def make_bundle(name: str, raw: dict, val_size: int = DEFAULT_VAL_SIZE, seed: int = 0, augment: str = "none") -> DataBundle:
    """Carve the validation split out of ``raw['train_*']`` and wrap everything in a DataBundle."""
    train_idx, val_idx = split_indices(len(raw["train_labels"]), val_size, seed)
    train = ImageSet(raw["train_images"][train_idx], raw["train_labels"][train_idx])
    val = ImageSet(raw["train_images"][val_idx], raw["train_labels"][val_idx])
    test = ImageSet(raw["test_images"], raw["test_labels"])
    mean, std = channel_stats(train.images)
    classes = list(raw["classes"])
    num_classes = max(len(classes), int(raw["train_labels"].max()) + 1)
    return DataBundle(name=name, train=train, val=val, test=test, num_classes=num_classes, classes=classes,
                      mean=mean, std=std, augment=augment)


def load_data(name: str, root: str | os.PathLike | None = None, val_size: int = DEFAULT_VAL_SIZE, seed: int = 0,
              fetch: bool = True, progress: Progress | None = None) -> DataBundle:
    """Load ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, ``"synthetic"`` or a path as a DataBundle.

    ``seed`` is the seed of the *validation split* (keep the default 0 so runs compare on the same
    split). ``fetch=True`` fetches a missing named data set; ``fetch=False`` raises DataError
    naming the command to run. A path may be an image-folder tree (``train/`` and ``test/`` with
    class sub-folders), its ``.tar.gz``, a folder of MNIST-layout IDX files, or CIFAR-10 binary
    batches; its default augmentation is ``"none"``. ``"synthetic"`` is ``make_synthetic(seed=seed)``
    (``val_size`` does not apply).
    """
    key = str(name)
    if key.lower() == "synthetic":
        return make_synthetic(seed=seed)
    lowered = key.lower().replace("_", "-")
    if lowered in ("mnist", "fashion-mnist", "fashion", "fashionmnist", "cifar10", "cifar-10"):
        canonical = _check_name(lowered)
        raw = load_raw(canonical, root, fetch=fetch, progress=progress)
        return make_bundle(canonical, raw, val_size, seed, AUGMENT[canonical])
    path = Path(key).expanduser()
    if not path.exists():
        raise DataError(
            f"unknown data set {name!r}: not one of mnist, fashion-mnist, cifar10, synthetic and not an existing "
            "path; check the spelling or give the path of an image-folder tree or its .tar.gz."
        )
    raw = load_raw_path(path, progress, root)
    stem = path.name.split(".")[0] or "custom"
    return make_bundle(stem, raw, val_size, seed, "none")


def describe(bundle: DataBundle) -> dict:
    """Sizes, shapes, classes and statistics of a bundle (for ``netrazor data info``)."""
    def counts(s: ImageSet) -> list[int]:
        return torch.bincount(s.labels, minlength=bundle.num_classes).tolist()

    return {
        "name": bundle.name,
        "input_shape": list(bundle.input_shape),
        "num_classes": bundle.num_classes,
        "classes": bundle.classes,
        "splits": {k: len(getattr(bundle, k)) for k in ("train", "val", "test")},
        "class_counts": {k: counts(getattr(bundle, k)) for k in ("train", "val", "test")},
        "mean": list(bundle.mean),
        "std": list(bundle.std),
        "augment": bundle.augment,
        "bytes_uint8": sum(getattr(bundle, k).images.numel() for k in ("train", "val", "test")),
    }
