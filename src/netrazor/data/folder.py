"""Reader for image-folder trees (PNG/JPEG in class sub-folders) and for the ``.tar.gz`` of one.

Layout (torchvision ``ImageFolder`` style, one tree per split)::

    <root>/[anything/]train/<class>/<file>.png|.jpg
    <root>/[anything/]test/<class>/<file>.png|.jpg     (``val/`` or ``valid/`` is used when no ``test/``)

Class names are the sorted sub-folder names of ``train/``; the label of a class is its index in
that list. Archives are read member by member straight from the tar stream (nothing is extracted
to disk; links and special members are skipped). Decoding uses Pillow; grey images give one
channel, everything else is converted to RGB; a tree that mixes both is returned as RGB.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from netrazor.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
TEST_NAMES = ("test",)
VAL_NAMES = ("val", "valid", "validation")
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
# No single image of a classification set should be larger than this; refuse rather than risk a
# decompression bomb from a hostile archive.
MAX_MEMBER_BYTES = 64 * 2**20

Progress = Callable[[int, "int | None", str], None]


def _split_and_class(parts: tuple[str, ...]) -> tuple[str, str] | None:
    """Find ``.../<split>/<class>/<file>`` in a path's parts -> (split, class)."""
    for i in range(len(parts) - 2, 0, -1):
        split = parts[i - 1].lower()
        if split == "train" or split in TEST_NAMES or split in VAL_NAMES:
            return split, parts[i]
    return None


def _decode(data: bytes, name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("L") if im.mode in GREY_MODES else im.convert("RGB")
            array = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{name} is not a readable image ({exc}); remove or replace it.") from exc
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


def _iter_directory(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            yield path.relative_to(root).as_posix(), path.read_bytes()


def _iter_tar(archive: Path) -> Iterator[tuple[str, bytes]]:
    try:
        # "r|*" streams the archive once (no seeking), whatever its compression.
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                if not member.isfile() or PurePosixPath(member.name).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    raise DataError(f"{archive}:{member.name} is {member.size} bytes, too large for an image; refusing.")
                yield member.name, tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(
            f"{archive} is not a readable tar archive ({exc}); it may be truncated — copy or fetch it again."
        ) from exc


def read_image_folder(source: str | os.PathLike, progress: Progress | None = None) -> dict:
    """Decode a tree (folder or ``.tar[.gz]``) into train/test uint8 tensors.

    Returns ``{"train_images" [N,C,H,W], "train_labels", "test_images", "test_labels", "classes"}``.
    ``progress(done, None, "decoding")`` is called every 1000 images.
    """
    source = Path(source)
    if source.is_dir():
        members: Iterable[tuple[str, bytes]] = _iter_directory(source)
    elif source.is_file():
        members = _iter_tar(source)
    else:
        raise DataError(f"{source} does not exist; give an image-folder tree or its .tar.gz.")

    records: dict[str, list[tuple[str, str, np.ndarray]]] = {}
    for count, (name, data) in enumerate(members, 1):
        found = _split_and_class(PurePosixPath(name).parts)
        if found is None:
            continue
        split, cls = found
        split = "train" if split == "train" else ("test" if split in TEST_NAMES else "val")
        records.setdefault(split, []).append((cls, name, _decode(data, f"{source}:{name}")))
        if progress is not None and count % 1000 == 0:
            progress(count, None, "decoding")

    test_split = "test" if records.get("test") else "val"
    if not records.get("train") or not records.get(test_split):
        raise DataError(
            f"{source} needs images under train/<class>/ and test/<class>/ (found splits: "
            f"{sorted(records) or 'none'}); arrange the tree that way."
        )
    classes = sorted({cls for cls, _, _ in records["train"]})
    unknown = sorted({cls for cls, _, _ in records[test_split]} - set(classes))
    if unknown:
        raise DataError(f"{source}: test classes {unknown} have no training images; add them to train/ or drop them.")
    index = {cls: i for i, cls in enumerate(classes)}

    shapes = {r[2].shape[1:] for split in ("train", test_split) for r in records[split]}
    if len(shapes) != 1:
        raise DataError(
            f"{source} mixes image sizes {sorted(shapes)[:4]}; resize every image to one size first."
        )
    channels = max(r[2].shape[0] for split in ("train", test_split) for r in records[split])

    out: dict = {"classes": classes}
    for split, key in (("train", "train"), (test_split, "test")):
        rows = sorted(records[split], key=lambda r: (index[r[0]], r[1]))  # deterministic order
        arrays = [np.repeat(r[2], channels, axis=0) if r[2].shape[0] != channels else r[2] for r in rows]
        out[f"{key}_images"] = torch.from_numpy(np.stack(arrays))
        out[f"{key}_labels"] = torch.tensor([index[r[0]] for r in rows], dtype=torch.int64)
    return out
