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
    # the recipe's teacher, built on first call (trained or loaded): only distilling stages pay for it
    teacher: Callable[[], nn.Module] | None = None


def stage_kinds() -> list[str]:
    return sorted((*METHOD_STAGES, *OTHER_STAGES))


def method_class(kind: str) -> type:
    # imported on demand: loading every method package up front would slow every CLI command
    module_name, class_name = METHOD_STAGES[kind]
    return getattr(importlib.import_module(module_name), class_name)


def stage_uses_teacher(kind: str, params: dict) -> bool:
    """Whether a stage learns from the recipe's teacher: a method with a ``uses_teacher(params)`` rule
    (the contract of methods that take ``run(..., teacher=)``) that says so for these knobs."""
    if kind not in METHOD_STAGES:
        return False
    rule = getattr(method_class(kind), "uses_teacher", None)
    return bool(rule and rule(params))


def _check_params(kind: str, params: dict, allowed: list[str], source: str) -> None:
    for key in params:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else f" Allowed: {', '.join(sorted(allowed))}."
            raise RecipeError(f"{source}: stage `{kind}` has no parameter `{key}`.{hint}")


def _train_fields() -> list[str]:
    from netrazor.train import TrainConfig

    return [f.name for f in dataclasses.fields(TrainConfig)]


QUANTISE_PARAMS = ("bits", "tolerance", "method", "per_channel", "budget_bits", "qat_epochs", "qat_lr")
# at most one way to choose the widths: fixed ``bits``, a ``tolerance`` search (default) or a ``budget_bits`` allocation
QUANTISE_MODES = ("bits", "tolerance", "budget_bits")
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
            _check_quantise(stage.params, f"{source}: stage {index} `quantise`")
        elif kind == "pack":
            _check_params(kind, stage.params, list(PACK_PARAMS), source)
        else:
            close = difflib.get_close_matches(kind, stage_kinds(), n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise RecipeError(f"{source}: stage {index}: unknown stage `{kind}`. Known: {', '.join(stage_kinds())}.{hint}")
    _check_train_overrides(recipe, source)
    _check_teacher(recipe, source)
    if recipe.model.checkpoint:
        _check_checkpoint_exists(recipe.model.checkpoint, "model checkpoint", source)


def _check_train_overrides(recipe: Any, source: str) -> None:
    _check_params("train (recipe-level)", recipe.train, _train_fields(), source)


def _check_teacher(recipe: Any, source: str) -> None:
    """A distilling stage needs the recipe's ``teacher``; a teacher no stage learns from is a mistake too."""
    distilling = [f"{i} `{st.kind}`" for i, st in enumerate(recipe.stages) if stage_uses_teacher(st.kind, st.params)]
    teacher = getattr(recipe, "teacher", None)
    if distilling and teacher is None:
        raise RecipeError(f"{source}: stage {distilling[0]} learns from a teacher but the recipe has none; "
                          "add `teacher: {train: {epochs: 20}}` (a dense model trained first) or "
                          "`teacher: {checkpoint: path/to/model}`, or drop the stage's use of it (gates distill_alpha: 0, "
                          "evolution teacher: input).")
    if teacher is not None and not distilling:
        raise RecipeError(f"{source}: the recipe has a `teacher` but no stage distils from it; set distill_alpha > 0 "
                          "on a gates stage, teacher: recipe on an evolution stage, or remove `teacher`.")
    if teacher is not None:
        _check_params("teacher.train", teacher.train, _train_fields(), source)
        if teacher.checkpoint:
            _check_checkpoint_exists(teacher.checkpoint, "teacher checkpoint", source)


def _check_checkpoint_exists(path: str, what: str, source: str) -> None:
    """A checkpoint the recipe names must exist when it is parsed, not hours later at the stage that loads it."""
    from netrazor.surgery.serialize import checkpoint_paths

    missing = [str(p) for p in checkpoint_paths(path) if not Path(p).exists()]
    if missing:
        raise RecipeError(f"{source}: {what} {path!r} not found ({', '.join(missing)} missing); give the path of a "
                          "model saved by netrazor (X for X.safetensors + X.json).")


def run_stage(kind: str, params: dict, model: nn.Module, ctx: StageContext) -> tuple[nn.Module, dict]:
    """Run one stage; returns the new model and the stage's own record (method-specific)."""
    if kind in ("train", "finetune"):
        history = ctx.adapter.train(model, run_dir=ctx.stage_dir / "train", resume=True, **params)
        return model, {"history": history}
    if kind in METHOD_STAGES:
        method = method_class(kind)(**params)
        adapter = dataclasses.replace(ctx.adapter, run_dir=ctx.stage_dir)
        if stage_uses_teacher(kind, params):
            if ctx.teacher is None:
                raise RecipeError(f"stage `{kind}` learns from a teacher but none was given to the run")
            return method.run(model, adapter, teacher=ctx.teacher())
        return method.run(model, adapter)
    if kind == "quantise":
        return _quantise(model, params, ctx)
    if kind == "pack":
        return _pack(model, params, ctx)
    raise RecipeError(f"unknown stage `{kind}`")


def _check_quantise(params: dict, where: str) -> None:
    """Recipe-time checks of the quantise knobs (a bad value fails before any work starts)."""
    modes = [m for m in QUANTISE_MODES if m in params]
    if len(modes) > 1:
        raise RecipeError(f"{where}: give only one of {', '.join(modes)} (fixed widths, a tolerance search or a "
                          "bit budget); drop the others.")
    if "budget_bits" in params and (not isinstance(params["budget_bits"], int) or params["budget_bits"] <= 0):
        raise RecipeError(f"{where}: budget_bits={params['budget_bits']!r} must be a positive integer "
                          "(total bits of indices + codebooks over all layers).")
    qat = params.get("qat_epochs", 0)
    if not isinstance(qat, int) or qat < 0:
        raise RecipeError(f"{where}: qat_epochs={qat!r} must be an integer >= 0 (0 = no quantisation-aware fine-tune).")
    if params.get("qat_lr") is not None and not (isinstance(params["qat_lr"], (int, float)) and params["qat_lr"] > 0):
        raise RecipeError(f"{where}: qat_lr={params['qat_lr']!r} must be a positive number (or leave it out).")


# [REC] the QAT fine-tune's default learning rate: a tenth of the recipe's peak rate (the net is
# already trained; a full rate would undo the sparsified optimum before the codebooks settle).
QAT_LR_SCALE = 0.1


def _quantise(model: nn.Module, params: dict, ctx: StageContext) -> tuple[nn.Module, dict]:
    """Choose widths (``bits`` | ``tolerance`` search | ``budget_bits`` allocation), then optionally
    fine-tune with straight-through quantisation (``qat_epochs``) and keep whichever of the two
    quantised models has the lower validation error."""
    from netrazor import quant

    method = params.get("method", "kmeans")
    per_channel = params.get("per_channel", False)
    if "bits" in params:
        result = quant.quantize_model(model, bits=params["bits"], method=method, per_channel=per_channel)
    elif "budget_bits" in params:
        def val_error(candidate: nn.Module) -> float:
            return 1.0 - ctx.adapter.evaluate(candidate, "val")["accuracy"]

        result = quant.allocate_bits(model, val_error, int(params["budget_bits"]), method=method, per_channel=per_channel)
    else:
        baseline = ctx.adapter.evaluate(model, "val")["accuracy"]

        def accuracy_drop(candidate: nn.Module) -> float:
            return baseline - ctx.adapter.evaluate(candidate, "val")["accuracy"]

        result = quant.search_bits(
            model, accuracy_drop, tolerance=params.get("tolerance", 0.002), method=method, per_channel=per_channel,
        )
    record: dict[str, Any] = {"bits": result.bits, "bias_bits": result.bias_bits, "method": method,
                              "mode": next((m for m in QUANTISE_MODES if m in params), "tolerance")}
    if params.get("qat_epochs", 0) > 0:
        result, record["qat"] = _qat_finetune(model, result, params, ctx)
    ctx.artifacts["quantisation"] = result.to_dict()
    return result.model, record


def _qat_finetune(float_model: nn.Module, searched, params: dict, ctx: StageContext):
    """Straight-through QAT at the chosen widths (``netrazor.quant.qat``), from the float weights.

    The quantised biases are set to their chosen levels and frozen (QAT re-quantises weights only;
    a bias trained in float would have to be re-quantised afterwards, unchecked). The trained
    model is re-quantised with the same widths (exact: its weights already hold at most 2^b levels)
    and kept only when its validation error is lower than the searched model's: the choice is
    made on validation data, like the search itself. Returns ``(QuantResult, record)``.
    """
    import copy

    from netrazor import quant
    from netrazor.quant.model import quantizable_layers

    work = copy.deepcopy(float_model)
    layers = quantizable_layers(work)
    frozen = []
    for name, q in searched.biases.items():
        bias = layers[name].bias
        bias.data.copy_(q.dequantized)
        bias.requires_grad_(False)
        frozen.append(bias)
    lr = params.get("qat_lr") or QAT_LR_SCALE * ctx.adapter.train_config.lr
    callback = quant.QuantizationAwareCallback(bits=searched.bits, method=searched.method, per_channel=searched.per_channel)
    history = ctx.adapter.train(work, epochs=int(params["qat_epochs"]), callbacks=[callback], lr=lr,
                                run_dir=ctx.stage_dir / "qat", resume=True)
    for bias in frozen:
        bias.requires_grad_(True)
    trained = quant.quantize_model(work, searched.bits, method=searched.method, per_channel=searched.per_channel,
                                   bias_bits=searched.bias_bits or None)
    trained.evals = {**searched.evals, "qat_epochs": int(params["qat_epochs"]), "qat_lr": lr}
    before = ctx.adapter.evaluate(searched.model, "val")["error"]
    after = ctx.adapter.evaluate(trained.model, "val")["error"]
    kept = after < before
    record = {"epochs": int(params["qat_epochs"]), "lr": lr, "val_error_before": before, "val_error_after": after,
              "kept": kept, "history": history}
    return (trained if kept else searched), record


def _pack(model: nn.Module, params: dict, ctx: StageContext) -> tuple[nn.Module, dict]:
    from netrazor import codec

    path = ctx.stage_dir / params.get("filename", "model.nrz")
    report = codec.pack(model, path, quantisation=ctx.artifacts.get("quantisation"))
    unpacked = codec.unpack(path)
    ctx.artifacts["artifact"] = str(path)
    # ``artifact_bytes`` makes the runner report the file's size as this stage's bytes.
    return unpacked, {"artifact": str(path), "artifact_bytes": path.stat().st_size, "pack_report": report.to_dict()}
