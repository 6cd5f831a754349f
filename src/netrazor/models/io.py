"""Save and load ZOO models: ``X.safetensors`` (weights) + ``X.json`` (spec), no pickle.

The JSON is ``{"format": "netrazor-model", "version": 1, "spec": model_spec(model),
"tensors": {name: shape}, "extra": {...}}``. Both files are written atomically; the weights go
first so a JSON on disk always describes weights that were fully written. Loading rebuilds the
architecture from the spec and checks every tensor name and shape before copying, so a file
from a different model, a truncated file or a hand-edited spec fails with ``CheckpointError``
instead of half-loading. Models whose architecture was changed by surgery are saved by
``netrazor.surgery.save_model`` (which may extend this format); this module only knows the zoo.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netrazor.errors import CheckpointError, ModelError
from netrazor.io import load_tensors, read_json, save_tensors, write_json
from netrazor.models.zoo import model_from_spec, model_spec

FORMAT = "netrazor-model"
VERSION = 1


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``X``, ``X.safetensors`` or ``X.json`` -> ``(X.safetensors, X.json)``."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``path.safetensors`` + ``path.json`` for a zoo model; returns both paths.

    ``extra`` is free-form JSON kept next to the spec (metrics, provenance). Raises
    ``ModelError`` when ``model`` was not built by the zoo or was altered since (its module
    types or tensor shapes differ from what its spec builds) — save those with
    ``netrazor.surgery.save_model``.
    """
    spec = model_spec(model)
    state = model.state_dict()
    _check_matches_spec(model, spec, state)
    weights, meta = checkpoint_paths(path)
    save_tensors(weights, state, metadata={"format": FORMAT, "version": str(VERSION)})
    write_json(
        meta,
        {
            "format": FORMAT,
            "version": VERSION,
            "spec": spec,
            "tensors": {k: list(v.shape) for k, v in state.items()},
            "extra": extra or {},
        },
    )
    return weights, meta


def _check_matches_spec(model: nn.Module, spec: dict, state: dict) -> None:
    """Refuse a model that no longer is what its spec builds (surgery keeps ``netrazor_spec``).

    Module names and types and every tensor shape must equal a fresh build of the spec;
    otherwise the saved spec would silently rebuild the *original* architecture on load.
    """
    fresh = model_from_spec(spec)
    ours = {name: type(m) for name, m in model.named_modules()}
    theirs = {name: type(m) for name, m in fresh.named_modules()}
    ref_state = fresh.state_dict()
    differs = sorted(n for n in set(ours) | set(theirs) if ours.get(n) is not theirs.get(n))
    differs += sorted(
        k for k in set(state) | set(ref_state)
        if k not in state or k not in ref_state or tuple(state[k].shape) != tuple(ref_state[k].shape)
    )
    if differs:
        raise ModelError(
            f"this {spec['name']} no longer matches its zoo spec (changed: {', '.join(differs[:5])}"
            f"{'…' if len(differs) > 5 else ''}); save altered architectures with netrazor.surgery.save_model."
        )


def read_checkpoint_json(path: str | os.PathLike) -> dict:
    """The JSON half of a checkpoint, validated; ``CheckpointError`` when missing or malformed."""
    _, meta_path = checkpoint_paths(path)
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict):
        raise CheckpointError(
            f"{meta_path} has no model spec; it is not a netrazor zoo checkpoint — save it with "
            "netrazor.models.save_model (or netrazor.surgery.save_model for altered architectures)."
        )
    fmt = meta.get("format", FORMAT)
    if fmt != FORMAT:
        # e.g. "netrazor-surgery-model": same spec key, but leaves changed after the zoo built them;
        # rebuilding from the spec alone would silently undo those changes.
        raise CheckpointError(
            f"{meta_path} is a {fmt!r} file, not a plain zoo checkpoint; load it with "
            "netrazor.surgery.load_model (it reads both formats)."
        )
    version = meta.get("version", VERSION)
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{meta_path} has format version {version!r}; this netrazor reads up to {VERSION} — upgrade netrazor.")
    return meta


def check_tensors(tensors: dict, expected: dict, weights_path: Path, architecture: str) -> None:
    """Raise ``CheckpointError`` unless ``tensors`` has exactly the names and shapes of ``expected``.

    ``architecture`` names what the weights were checked against (for the message). Shared by every
    loader that pairs a weights file with an architecture description (zoo and surgery formats).
    """
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path} does not match {architecture}: "
            f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}; "
            "the two files come from different models — save them together again."
        )
    for key, ref in expected.items():
        if tuple(tensors[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{weights_path}: tensor {key!r} has shape {tuple(tensors[key].shape)} but {architecture} "
                f"needs {tuple(ref.shape)}; the weights belong to a different architecture — re-save the model."
            )


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a zoo model from ``path`` (``X``, ``X.safetensors`` or ``X.json``) with its weights."""
    weights_path, meta_path = checkpoint_paths(path)
    meta = read_checkpoint_json(path)
    try:
        model = model_from_spec(meta["spec"])
    except ModelError as exc:
        raise CheckpointError(f"{meta_path} holds a spec the zoo cannot build ({exc}); the file is corrupt or from a newer netrazor.") from exc
    tensors, _ = load_tensors(weights_path)
    check_tensors(tensors, model.state_dict(), weights_path, f"the {meta['spec'].get('name')} spec in {meta_path}")
    model.load_state_dict(tensors, strict=True)
    return model.to(map_location)
