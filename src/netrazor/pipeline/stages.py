"""Stages of a recipe: each takes a model and a context and returns a (smaller) model + a record.

A stage never reaches into another; what one stage hands the next beyond the
model (e.g. the bit-widths chosen by ``quantise`` for ``pack``) goes through
``StageContext.artifacts``. Every stage's parameters are validated when the
recipe is parsed, so a typo fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from netrazor.errors import ConfigError, RecipeError
from netrazor.methods.base import Adapter

# kind -> (module, class) of methods that follow the `.run(model, adapter)` contract.
METHOD_STAGES: dict[str, tuple[str, str]] = {
    "gates": ("netrazor.methods.gates", "GatesMethod"),
    "nepenthe": ("netrazor.methods.entropy_depth", "NepentheMethod"),
    "easier": ("netrazor.methods.entropy_depth", "EasierMethod"),
    "layer-folding": ("netrazor.methods.entropy_depth", "LayerFoldingMethod"),
    "evolution": ("netrazor.methods.evolution", "EvolutionMethod"),
    "ebcle": ("netrazor.methods.ebcle", "EbcleMethod"),
}
OTHER_STAGES = ("train", "finetune", "quantise", "pack")


@dataclass
class StageContext:
    adapter: Adapter
    stage_dir: Path
    seed: int
    artifacts: dict[str, Any] = field(default_factory=dict)
    progress: Callable[..., None] | None = None


def stage_kinds() -> list[str]:
    return sorted((*METHOD_STAGES, *OTHER_STAGES))


def method_class(kind: str) -> type:
    # imported on demand: loading every method package up front would slow every CLI command
    module_name, class_name = METHOD_STAGES[kind]
    return getattr(importlib.import_module(module_name), class_name)


def _check_params(kind: str, params: dict, allowed: list[str], source: str) -> None:
    for key in params:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else f" Allowed: {', '.join(sorted(allowed))}."
            raise RecipeError(f"{source}: stage `{kind}` has no parameter `{key}`.{hint}")


def _train_fields() -> list[str]:
    from netrazor.train import TrainConfig

    return [f.name for f in dataclasses.fields(TrainConfig)]


QUANTISE_PARAMS = ("bits", "tolerance", "method", "per_channel", "budget_bits")
PACK_PARAMS = ("filename",)


def validate_stages(recipe: Any, source: str) -> None:
    """Check every stage kind and its parameters without doing any work."""
    for index, stage in enumerate(recipe.stages):
        kind = stage.kind
        if kind in METHOD_STAGES:
            cls = method_class(kind)
            names = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else list(inspect.signature(cls).parameters)
            _check_params(kind, stage.params, names, source)
            try:
                cls(**stage.params)
            except (TypeError, ValueError, ConfigError) as exc:
                raise RecipeError(f"{source}: stage {index} `{kind}`: {exc}") from exc
        elif kind in ("train", "finetune"):
            _check_params(kind, stage.params, _train_fields(), source)
        elif kind == "quantise":
            _check_params(kind, stage.params, list(QUANTISE_PARAMS), source)
        elif kind == "pack":
            _check_params(kind, stage.params, list(PACK_PARAMS), source)
        else:
            close = difflib.get_close_matches(kind, stage_kinds(), n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise RecipeError(f"{source}: stage {index}: unknown stage `{kind}`. Known: {', '.join(stage_kinds())}.{hint}")
    _check_train_overrides(recipe, source)


def _check_train_overrides(recipe: Any, source: str) -> None:
    _check_params("train (recipe-level)", recipe.train, _train_fields(), source)


def run_stage(kind: str, params: dict, model: nn.Module, ctx: StageContext) -> tuple[nn.Module, dict]:
    """Run one stage; returns the new model and the stage's own record (method-specific)."""
    if kind in ("train", "finetune"):
        history = ctx.adapter.train(model, run_dir=ctx.stage_dir / "train", resume=True, **params)
        return model, {"history": history}
    if kind in METHOD_STAGES:
        method = method_class(kind)(**params)
        adapter = dataclasses.replace(ctx.adapter, run_dir=ctx.stage_dir)
        return method.run(model, adapter)
    if kind == "quantise":
        return _quantise(model, params, ctx)
    if kind == "pack":
        return _pack(model, params, ctx)
    raise RecipeError(f"unknown stage `{kind}`")


def _quantise(model: nn.Module, params: dict, ctx: StageContext) -> tuple[nn.Module, dict]:
    from netrazor import quant

    method = params.get("method", "kmeans")
    if "bits" in params:
        bits = params["bits"]
        result = quant.quantize_model(model, bits=bits, method=method, per_channel=params.get("per_channel", False))
    else:
        baseline = ctx.adapter.evaluate(model, "val")["accuracy"]

        def accuracy_drop(candidate: nn.Module) -> float:
            return baseline - ctx.adapter.evaluate(candidate, "val")["accuracy"]

        result = quant.search_bits(
            model, accuracy_drop, tolerance=params.get("tolerance", 0.002), method=method,
            per_channel=params.get("per_channel", False),
        )
    ctx.artifacts["quantisation"] = result.to_dict()
    return result.model, {"bits": result.bits, "method": method}


def _pack(model: nn.Module, params: dict, ctx: StageContext) -> tuple[nn.Module, dict]:
    from netrazor import codec

    path = ctx.stage_dir / params.get("filename", "model.nrz")
    report = codec.pack(model, path, quantisation=ctx.artifacts.get("quantisation"))
    unpacked = codec.unpack(path)
    ctx.artifacts["artifact"] = str(path)
    # ``artifact_bytes`` makes the runner report the file's size as this stage's bytes.
    return unpacked, {"artifact": str(path), "artifact_bytes": path.stat().st_size, "pack_report": report.to_dict()}
