"""Reader for the CIFAR-10 binary version (``cifar-10-binary.tar.gz`` / ``cifar-10-batches-bin/``).

Format (Krizhevsky, https://www.cs.toronto.edu/~kriz/cifar.html): each ``.bin`` file is a run of
3073-byte records — one label byte (0..9) then 1024 red, 1024 green and 1024 blue bytes of a
32x32 image in row-major order. We read this binary version, never the pickled "python version".
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np
import torch

from netrazor.errors import DataError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
RECORD_BYTES = 1 + 3 * 32 * 32
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILES = ["test_batch.bin"]
META_FILE = "batches.meta.txt"


def parse_cifar_batch(raw: bytes, name: str = "<bytes>", num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """One binary batch -> uint8 images ``[N,3,32,32]`` and int64 labels ``[N]``."""
    if len(raw) == 0 or len(raw) % RECORD_BYTES:
        raise DataError(
            f"{name} has {len(raw)} bytes, not a positive multiple of the {RECORD_BYTES}-byte CIFAR-10 record; "
            "it is truncated or not a CIFAR-10 binary batch — fetch the archive again (netrazor data fetch cifar10)."
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    if int(labels.max()) >= num_classes:
        raise DataError(f"{name} holds label {int(labels.max())} >= {num_classes}; it is not a CIFAR-10 batch.")
    images = torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).copy())
    return images, labels


def _concat(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _classes_from_meta(text: str) -> list[str]:
    names = [line.strip() for line in text.splitlines() if line.strip()]
    return names if len(names) == len(CIFAR10_CLASSES) else list(CIFAR10_CLASSES)


def read_cifar_binary(source: str | os.PathLike) -> dict:
    """Read the binary batches from a folder or straight from the ``.tar.gz`` (no extraction).

    Returns ``{"train_images", "train_labels", "test_images", "test_labels", "classes"}``.
    """
    source = Path(source)
    wanted = TRAIN_FILES + TEST_FILES
    blobs: dict[str, bytes] = {}
    meta = None
    if source.is_dir():
        folder = source / "cifar-10-batches-bin" if (source / "cifar-10-batches-bin").is_dir() else source
        for name in wanted:
            if (folder / name).is_file():
                blobs[name] = (folder / name).read_bytes()
        if (folder / META_FILE).is_file():
            meta = (folder / META_FILE).read_text(errors="replace")
    elif source.is_file():
        try:
            with tarfile.open(source, "r:*") as tar:
                for member in tar:
                    base = member.name.rsplit("/", 1)[-1]
                    if not member.isfile() or (base not in wanted and base != META_FILE):
                        continue
                    data = tar.extractfile(member).read()
                    if base == META_FILE:
                        meta = data.decode(errors="replace")
                    else:
                        blobs[base] = data
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"{source} is not a readable tar archive ({exc}); fetch it again.") from exc
    else:
        raise DataError(f"{source} does not exist; run `netrazor data fetch cifar10` or give the archive path.")
    missing = [n for n in wanted if n not in blobs]
    if missing:
        raise DataError(
            f"{source} lacks the CIFAR-10 binary batches {', '.join(missing)}; give the canonical "
            "cifar-10-binary.tar.gz or its extracted cifar-10-batches-bin/ folder."
        )
    train = _concat([parse_cifar_batch(blobs[n], f"{source}:{n}") for n in TRAIN_FILES])
    test = _concat([parse_cifar_batch(blobs[n], f"{source}:{n}") for n in TEST_FILES])
    return {
        "train_images": train[0],
        "train_labels": train[1],
        "test_images": test[0],
        "test_labels": test[1],
        "classes": _classes_from_meta(meta) if meta else list(CIFAR10_CLASSES),
    }


def is_cifar_binary(source: str | os.PathLike) -> bool:
    """True for a folder holding (or containing ``cifar-10-batches-bin/`` with) ``data_batch_1.bin``."""
    source = Path(source)
    return source.is_dir() and (
        (source / "data_batch_1.bin").is_file() or (source / "cifar-10-batches-bin" / "data_batch_1.bin").is_file()
    )
