"""Reader for the IDX format of MNIST and Fashion-MNIST (plain or gzip-compressed).

Format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, one type byte
(0x08 = unsigned byte, ...), one byte with the number of dimensions, then each dimension as a
big-endian int32, then the data in C order. Every field is checked so a truncated or foreign file
fails with a message that says which file and what to do, never with a reshape error.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from netrazor.errors import DataError

# type byte -> big-endian numpy dtype
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def decompress_if_gzip(raw: bytes, name: str = "<bytes>") -> bytes:
    """Return ``raw`` unchanged, or its gzip-decompressed content when it starts with the gzip magic."""
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(
            f"{name} is a damaged gzip file ({exc}); it is probably truncated — delete it and fetch the "
            "data set again (netrazor data fetch NAME)."
        ) from exc


def parse_idx(raw: bytes, name: str = "<bytes>") -> torch.Tensor:
    """Parse IDX bytes (plain or gzip) into a tensor of the stored dtype and shape."""
    data = decompress_if_gzip(raw, name)
    refetch = "delete it and fetch the data set again (netrazor data fetch NAME)"
    if len(data) < 4:
        raise DataError(f"{name} is too short to be an IDX file ({len(data)} bytes); {refetch}.")
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise DataError(
            f"{name} is not an IDX file (magic bytes {data[:4].hex()}, expected 0000 08|09|0b|0c|0d|0e NN); "
            f"check that the path points at an MNIST-style file, or {refetch}."
        )
    dtype, ndim = IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{name}: IDX header declares {ndim} dimensions but the file ends early; {refetch}.")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got < expected:
        raise DataError(
            f"{name} is truncated: header says {dims} ({expected} data bytes) but only {got} follow; {refetch}."
        )
    if got > expected:
        raise DataError(f"{name} has {got - expected} bytes of trailing garbage after {dims}; {refetch}.")
    array = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(dims)
    # Native byte order and a writable copy: torch cannot wrap big-endian or read-only buffers.
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read one IDX file (``.gz`` or plain, detected from the content)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; fetch the data set (netrazor data fetch NAME) or fix the path.")
    return parse_idx(path.read_bytes(), str(path))


def idx_images_labels(images: torch.Tensor, labels: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Check an (images, labels) IDX pair and return uint8 ``[N,1,H,W]`` and int64 ``[N]``."""
    if images.dim() != 3 or images.dtype != torch.uint8:
        raise DataError(f"{name}: expected uint8 images [N, H, W], got {images.dtype} {tuple(images.shape)}.")
    if labels.dim() != 1 or len(labels) != len(images):
        raise DataError(
            f"{name}: {len(images)} images but labels of shape {tuple(labels.shape)}; the image and label "
            "files do not belong together — fetch the data set again."
        )
    return images.unsqueeze(1).contiguous(), labels.long()


def find_idx_file(folder: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` in ``folder`` (also the ``stem.idx3-ubyte`` dotted spelling some mirrors use)."""
    candidates = [stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"]
    for name in candidates:
        if (folder / name).is_file():
            return folder / name
    return None


IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx_folder(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the four MNIST-layout IDX files of ``folder`` -> train/test images [N,1,H,W] and labels."""
    folder = Path(folder)
    paths = {key: find_idx_file(folder, stem) for key, stem in IDX_STEMS.items()}
    missing = [IDX_STEMS[k] for k, p in paths.items() if p is None]
    if missing:
        raise DataError(
            f"{folder} lacks {', '.join(missing)} (plain or .gz); fetch the data set "
            "(netrazor data fetch NAME) or point at a folder with the four MNIST-layout files."
        )
    out: dict[str, torch.Tensor] = {}
    for split in ("train", "test"):
        images, labels = idx_images_labels(
            read_idx(paths[f"{split}_images"]), read_idx(paths[f"{split}_labels"]), f"{folder} ({split})"
        )
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out
