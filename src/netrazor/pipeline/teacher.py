"""The recipe's teacher: the trained model a distilling stage learns from (``teacher:`` in a recipe).

Trained once per run folder, in ``<run>/teacher/``: the training loop checkpoints every epoch there,
so an interrupted run resumes the teacher too, and the finished model is saved beside it
(``teacher/model``, safetensors + architecture JSON) with its validation error in ``record.json``.
A ``checkpoint:`` teacher is loaded instead (netrazor's own loader: nothing is unpickled).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from netrazor.io import write_json
from netrazor.methods.base import Adapter

log = logging.getLogger(__name__)

TEACHER_DIR = "teacher"


def teacher_record(run_dir: str | Path) -> Path:
    """Where a run keeps its trained teacher's record; it exists once the teacher is complete."""
    return Path(run_dir) / TEACHER_DIR / "record.json"


def teacher_provider(recipe, adapter: Adapter, run_dir: Path) -> Callable[[], nn.Module] | None:
    """A function returning the recipe's teacher in eval mode (built on its first call, then kept),
    or None when the recipe has no teacher."""
    if recipe.teacher is None:
        return None
    return functools.cache(lambda: _load_or_train(recipe, adapter, Path(run_dir)))


def _load_or_train(recipe, adapter: Adapter, run_dir: Path) -> nn.Module:
    from netrazor.pipeline.runner import build_recipe_model
    from netrazor.surgery import load_model, save_model

    spec = recipe.teacher
    if spec.checkpoint:
        return load_model(spec.checkpoint).eval()
    folder = run_dir / TEACHER_DIR
    model_path = folder / "model"
    if teacher_record(run_dir).exists():  # written after the model: the model on disk is complete
        return load_model(model_path).eval()
    folder.mkdir(parents=True, exist_ok=True)
    # its own seed, apart from the stages' (recipe seed * 1000 + stage index)
    torch.manual_seed(recipe.seed * 1000 + 999)
    model = build_recipe_model(recipe, adapter.data)
    log.info("training the recipe's teacher in %s", folder)
    adapter.train(model, run_dir=folder / "train", resume=True, **spec.train)
    model.eval()
    val = adapter.evaluate(model, "val")
    save_model(model, model_path)
    epochs = int(spec.train.get("epochs") or adapter.train_config.epochs)
    write_json(teacher_record(run_dir), {"train": spec.train, "epochs": epochs, "val_error": val["error"]})
    log.info("teacher trained: val error %.4f", val["error"])
    return model
