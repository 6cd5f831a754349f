"""Epoch checkpoints: one safetensors file of tensors + one JSON file that commits it.

Layout in ``run_dir``::

    checkpoint-e0003.safetensors   model weights, optimizer tensors, torch RNG, callback tensors
    checkpoint.json                everything else + the name and token of the tensor file

Commit protocol (crash-safe without pickles or multi-file transactions): the tensor file is written
atomically under a new name first, then ``checkpoint.json`` is replaced atomically; only then are
older tensor files deleted. A kill at any moment leaves either the old or the new checkpoint
complete. A random token stored in both files catches a mismatched pair.
"""

from __future__ import annotations

import logging
import random
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netrazor.errors import CheckpointError
from netrazor.io import load_tensors, read_json, save_tensors, write_json

log = logging.getLogger(__name__)

FORMAT = "netrazor-train-checkpoint"
VERSION = 1
INDEX_NAME = "checkpoint.json"


def checkpoint_exists(run_dir: str | Path) -> bool:
    return (Path(run_dir) / INDEX_NAME).exists()


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """RNG states of torch (CPU + CUDA), numpy's global generator and python ``random``."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    meta = {
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "python": [py_version, list(py_state), py_gauss],
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    py_version, py_state, py_gauss = meta["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))


def save_checkpoint(run_dir: str | Path, epoch: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write the checkpoint after ``epoch`` epochs; returns the path of ``checkpoint.json``."""
    run_dir = Path(run_dir)
    token = secrets.token_hex(8)
    tensor_name = f"checkpoint-e{epoch:04d}.safetensors"
    save_tensors(run_dir / tensor_name, tensors, metadata={"token": token, "format": FORMAT})
    index = dict(meta, format=FORMAT, version=VERSION, epoch=epoch, tensors_file=tensor_name, token=token)
    write_json(run_dir / INDEX_NAME, index)
    for old in run_dir.glob("checkpoint-e*.safetensors"):
        if old.name != tensor_name:
            old.unlink(missing_ok=True)
    log.debug("checkpoint after epoch %d written to %s", epoch, run_dir)
    return run_dir / INDEX_NAME


def load_checkpoint(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and cross-check the checkpoint pair; raises CheckpointError when it is unusable."""
    run_dir = Path(run_dir)
    index_path = run_dir / INDEX_NAME
    if not index_path.exists():
        raise CheckpointError(
            f"no checkpoint in {run_dir} (missing {INDEX_NAME}); the run ended before its first epoch — start it again without resume."
        )
    index = read_json(index_path)
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise CheckpointError(
            f"{index_path} is not a netrazor v{VERSION} training checkpoint (format={index.get('format')!r}, "
            f"version={index.get('version')!r}); resume it with the netrazor version that wrote it or start afresh."
        )
    tensors, file_meta = load_tensors(run_dir / index["tensors_file"])
    if file_meta.get("token") != index.get("token"):
        raise CheckpointError(
            f"{index['tensors_file']} does not belong to {INDEX_NAME} in {run_dir} (token mismatch); "
            "the checkpoint pair is inconsistent — delete both files and restart the run."
        )
    return tensors, index
