"""Save / load any model without pickle: ``X.safetensors`` (weights) + ``X.json`` (architecture).

Three architecture kinds, tried in this order by :func:`save_model`:

``zoo``    a model built by ``netrazor.models`` (it carries ``netrazor_spec``) whose module tree
           still matches the zoo's, possibly with re-shaped or swapped leaf layers (pruned
           channels, a ReLU replaced by Identity, a bias added by constant folding). The JSON
           holds the zoo spec plus ``changed``: ``{module name: {"type", "args"}}`` for every
           leaf that differs from a fresh build. Loading rebuilds from the spec, re-creates the
           changed leaves from their constructor args, then loads the weights.
``graph``  any fx-traceable model made of whitelisted layers (:mod:`layers`) and whitelisted
           functions (:mod:`graph_spec`), e.g. the GraphModule from ``fold_linear_sections``.
``export`` anything else, through ``torch.export``: ``X.pt2`` from ``torch.export.save``.
           RISK: that archive stores its weights with ``torch.save`` and ``torch.export.load``
           falls back to ``torch.load(weights_only=False)`` — pickle. So :func:`load_model` refuses
           it unless ``trust_export=True`` (only for files you wrote yourself); the weights are
           also in the safetensors file and are loaded from there.

Every kind stores ``tensors`` ({name: shape}); a weights file that does not match the
architecture raises :class:`CheckpointError` naming the first differences.

This is netrazor's ONE model format: an unaltered zoo model is kind ``zoo`` with ``changed == {}``.
Files of the retired plain zoo format ("netrazor-model" v1: ``format``, ``version``, ``spec``,
``tensors``, ``extra``; written by the former ``netrazor.models.save_model``) are still read: they
are exactly a kind ``zoo`` header without changed layers, and load through the same code path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from netrazor.errors import CheckpointError, ModelError, SurgeryError
from netrazor.io import atomic_write_bytes, load_tensors, read_json, save_tensors, write_json
from netrazor.surgery.graph_spec import graph_to_spec, spec_to_graph_module
from netrazor.surgery.layers import Unsupported, build_layer, layer_record

log = logging.getLogger(__name__)

FORMAT = "netrazor-surgery-model"
VERSION = 1
LEGACY_ZOO_FORMAT = "netrazor-model"  # retired plain zoo format (version 1); read, never written
LEGACY_ZOO_VERSION = 1


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``X``, ``X.safetensors``, ``X.json`` or ``X.pt2`` -> ``(X.safetensors, X.json)``."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json", ".pt2"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def check_tensors(tensors: dict, expected: dict, weights_path: Path, architecture: str) -> None:
    """Raise ``CheckpointError`` unless ``tensors`` has exactly the names and shapes of ``expected``.

    ``architecture`` names what the weights were checked against (for the message). Checked before
    ``load_state_dict`` so that a mismatched pair of files never half-loads.
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


def _zoo_changes(model: nn.Module) -> dict | None:
    """``{"spec", "changed"}`` if ``model`` is a zoo model whose tree differs from a fresh build only
    by swapped or re-shaped whitelisted layers (a whole subtree may be swapped for one layer, e.g.
    a residual branch replaced by a zero branch); None otherwise."""
    spec = getattr(model, "netrazor_spec", None)
    if not isinstance(spec, dict) or isinstance(model, fx.GraphModule):
        return None
    from netrazor.models import model_from_spec

    fresh = model_from_spec(spec)
    ours = dict(model.named_modules())
    theirs = dict(fresh.named_modules())
    changed: dict[str, dict] = {}

    def under_changed(name: str) -> bool:
        return any(name.startswith(c + ".") for c in changed)

    for name, module in ours.items():  # parents come before children
        if under_changed(name):
            return None  # a swapped layer with children of its own is not a whitelisted leaf
        ref = theirs.get(name)
        if list(module.children()):
            if ref is None or type(module) is not type(ref):
                return None
            if set(dict(module.named_children())) != set(dict(ref.named_children())):
                return None
            continue
        try:
            rec = layer_record(module)
        except Unsupported:
            if ref is None or type(module) is not type(ref) or list(ref.children()):
                return None
            continue  # an unchanged non-whitelisted leaf of the zoo is rebuilt by the zoo itself
        if ref is None:
            return None
        try:
            same = not list(ref.children()) and layer_record(ref) == rec
        except Unsupported:
            same = False
        if not same:
            changed[name] = rec
    if any(name not in ours and not under_changed(name) for name in theirs):
        return None
    return {"spec": spec, "changed": changed}


def save_model(model: nn.Module, path: str | os.PathLike, example_input: torch.Tensor | None = None,
               extra: dict[str, Any] | None = None) -> dict:
    """Write ``path.safetensors`` + ``path.json`` (+ ``path.pt2`` for kind ``export``): netrazor's one saver.

    Any model: a zoo model as built (kind ``zoo``, ``changed == {}``), a zoo model altered by surgery
    (kind ``zoo`` with its changed leaves, or ``graph``), any other module (``graph``, else
    ``export``). ``path`` is ``X`` (or ``X.safetensors`` / ``X.json``). ``extra`` is free-form JSON
    kept in the header (metrics, provenance). ``example_input`` is needed only when the model falls
    back to ``torch.export``. Weights are written before the header, both atomically, so a header on
    disk always describes complete weights. Returns the JSON header written (``kind`` says which
    architecture form was used).
    """
    weights_path, meta_path = checkpoint_paths(path)
    state = {k: v for k, v in model.state_dict().items()}
    header: dict[str, Any] = {"format": FORMAT, "version": VERSION,
                              "tensors": {k: list(v.shape) for k, v in state.items()}, "extra": extra or {}}
    shape = _input_shape(model, example_input)
    if shape is not None:
        header["input_shape"] = shape
    zoo = _zoo_changes(model)
    if zoo is not None:
        header.update(kind="zoo", **zoo)
    else:
        try:
            header.update(kind="graph", graph=graph_to_spec(model))
        except Unsupported as exc:
            reason = str(exc)
        except Exception as exc:  # fx trace errors
            reason = f"fx cannot trace it ({type(exc).__name__})"
        else:
            reason = None
        if reason is not None:
            if example_input is None:
                raise SurgeryError(
                    f"this model cannot be saved as data ({reason}); pass example_input= so it can be "
                    "saved through torch.export instead."
                )
            log.warning("saving through torch.export (%s); loading it needs trust_export=True", reason)
            pt2 = weights_path.with_suffix(".pt2")
            atomic_write_bytes(pt2, _export_program(model, example_input))
            header.update(kind="export", program=pt2.name)
    save_tensors(weights_path, state, metadata={"format": FORMAT, "version": str(VERSION)})
    write_json(meta_path, header)
    return header


def _export_program(model: nn.Module, example_input: torch.Tensor) -> bytes:
    """The ``torch.export`` archive of ``model`` in eval mode; the caller's train/eval mode is kept."""
    import io

    was_training = model.training
    try:
        program = torch.export.export(model.eval(), (example_input,))
    finally:
        model.train(was_training)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _input_shape(model: nn.Module, example_input) -> list[int] | None:
    if example_input is not None:
        return [int(s) for s in example_input.shape[1:]]
    kwargs = (getattr(model, "netrazor_spec", None) or {}).get("kwargs", {})
    if isinstance(kwargs.get("in_channels"), int) and isinstance(kwargs.get("input_size"), (list, tuple)):
        return [kwargs["in_channels"], *kwargs["input_size"]]
    return None


def stored_input_shape(path: str | os.PathLike) -> tuple[int, ...] | None:
    """The input shape (without batch) a checkpoint records, or None."""
    header = read_json(checkpoint_paths(path)[1])
    shape = header.get("input_shape") if isinstance(header, dict) else None
    if shape is None and isinstance(header, dict) and isinstance(header.get("spec"), dict):
        kwargs = header["spec"].get("kwargs", {})
        if isinstance(kwargs.get("in_channels"), int) and isinstance(kwargs.get("input_size"), list):
            shape = [kwargs["in_channels"], *kwargs["input_size"]]
    return tuple(int(s) for s in shape) if shape else None


def read_header(path: str | os.PathLike) -> dict:
    """The validated JSON header of a saved model (``X``, ``X.json`` …); ``CheckpointError`` when bad.

    A file of the retired plain zoo format comes back as the kind ``zoo`` header it is equivalent
    to (``format`` = FORMAT, ``changed`` = {}), so every reader handles one format.
    """
    _, meta_path = checkpoint_paths(path)
    header = read_json(meta_path)
    if not isinstance(header, dict):
        raise CheckpointError(f"{meta_path} is not a netrazor model header; re-save the model.")
    fmt, version = header.get("format"), header.get("version")
    if fmt == LEGACY_ZOO_FORMAT:
        if not isinstance(version, int) or version > LEGACY_ZOO_VERSION:
            raise CheckpointError(f"{meta_path} has plain-zoo version {version!r}; this netrazor reads "
                                  f"{LEGACY_ZOO_VERSION} — the file is corrupt or from another netrazor.")
        if not isinstance(header.get("spec"), dict):
            raise CheckpointError(f"{meta_path} has no model spec; the file is corrupt — re-save the model.")
        return dict(header, format=FORMAT, version=VERSION, kind="zoo", changed={}, legacy_format=fmt)
    if fmt != FORMAT:
        raise CheckpointError(f"{meta_path} is not a netrazor model (format {fmt!r}); re-save it with "
                              "netrazor.surgery.save_model.")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{meta_path} has version {version!r}; this netrazor reads {VERSION} — upgrade.")
    return header


def load_model(path: str | os.PathLike, *, trust_export: bool = False) -> nn.Module:
    """Rebuild a model saved by :func:`save_model` (or by the retired plain zoo saver), in eval mode.

    ``path`` is ``X``, ``X.safetensors`` or ``X.json``. Missing, truncated or mismatched files raise
    ``CheckpointError`` naming the problem; nothing is half-loaded.
    """
    weights_path, meta_path = checkpoint_paths(path)
    header = read_header(path)
    tensors, _ = load_tensors(weights_path)
    kind = header.get("kind")
    if kind == "zoo":
        model = _build_zoo(header, meta_path)
    elif kind == "graph":
        model = spec_to_graph_module(header.get("graph"), tensors)
    elif kind == "export":
        if not trust_export:
            raise CheckpointError(
                f"{meta_path} holds a torch.export program; torch.export.load may unpickle data (code "
                "execution risk). Load it only if you wrote it: load_model(path, trust_export=True)."
            )
        program = torch.export.load(str(meta_path.with_name(header["program"])))
        model = program.module()
    else:
        raise CheckpointError(f"{meta_path} has unknown kind {kind!r}; the file is corrupt or from a newer netrazor.")
    check_tensors(tensors, model.state_dict(), weights_path, f"the architecture in {meta_path}")
    model.load_state_dict(tensors, strict=True)
    if kind != "export":  # an unlifted torch.export module has no train/eval switch
        model.eval()
    return model


def _build_zoo(header: dict, meta_path: Path) -> nn.Module:
    """The zoo model of ``header["spec"]`` with its ``changed`` leaves re-created (fresh weights)."""
    from netrazor.models import model_from_spec

    try:
        model = model_from_spec(header.get("spec"))
    except ModelError as exc:
        raise CheckpointError(f"{meta_path}: the zoo cannot build its spec ({exc}); the file is corrupt "
                              "or from a newer netrazor.") from exc
    changed = header.get("changed", {})
    if not isinstance(changed, dict):
        raise CheckpointError(f"{meta_path}: 'changed' must map layer names to layers; the file is corrupt.")
    for name, record in changed.items():
        try:
            model.get_submodule(name)
        except AttributeError as exc:
            raise CheckpointError(f"{meta_path}: changed layer {name!r} is not in the model; the file is corrupt.") from exc
        model.set_submodule(name, build_layer(record))
    model.netrazor_spec = header["spec"]
    return model
