"""Run a recipe end to end: data -> model -> stages -> artifact -> report, resumable.

Each completed stage leaves ``<run>/stage-<i>-<kind>/`` with the model after it
(safetensors + architecture as data) and its record; ``state.json`` lists the
completed stages. Re-running the same recipe into the same run folder skips the
completed stages and resumes the interrupted one from its last checkpoint (the
training loop checkpoints every epoch). Every stage starts from a seed derived
from the recipe seed and its index, so a resumed run ends with the same bytes
as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from netrazor.errors import ModelError, RecipeError
from netrazor.io import read_json, write_json
from netrazor.methods.base import Adapter
from netrazor.pipeline.layers import layer_profile
from netrazor.pipeline.recipe import Recipe
from netrazor.pipeline.stages import StageContext, run_stage, stage_uses_teacher
from netrazor.pipeline.teacher import TEACHER_DIR, teacher_provider, teacher_record
from netrazor.pipeline.tracking import PipelineTracker

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


@dataclass
class CompressResult:
    run_dir: Path
    model: nn.Module
    stages: list[dict]
    summary: dict
    artifacts: dict[str, Any] = field(default_factory=dict)


def load_recipe_data(recipe: Recipe):
    """The recipe's data set, with its validation split as the recipe states it."""
    from netrazor.data import load_data

    return load_data(recipe.data.name, root=recipe.data.root, val_size=recipe.data.val_size, seed=recipe.data.seed)


def build_recipe_model(recipe: Recipe, data) -> nn.Module:
    """The recipe's model: a zoo name, or the user's own factory ``"module:function"``."""
    spec = recipe.model
    if spec.name is not None:
        from netrazor.models import build_model

        kwargs = {"num_classes": data.num_classes, "in_channels": data.in_channels, "input_size": data.image_size}
        kwargs.update(spec.kwargs)
        model = build_model(spec.name, **kwargs)
    else:
        module_name, func_name = spec.factory.split(":", 1)
        try:
            factory = getattr(importlib.import_module(module_name), func_name)
        except (ImportError, AttributeError) as exc:
            raise ModelError(f"model factory {spec.factory!r} cannot be imported ({exc}); check the module path.") from exc
        model = factory(**spec.kwargs)
        if not isinstance(model, nn.Module):
            raise ModelError(f"model factory {spec.factory!r} returned {type(model).__name__}, not an nn.Module.")
    if spec.checkpoint:
        from netrazor.surgery import load_model

        model = load_model(spec.checkpoint)
    return model


def measure_stage(model: nn.Module, adapter: Adapter, latency: bool, bits: dict | None = None) -> dict:
    """Before/after numbers of a stage: params, non-zeros, MACs, bytes, latency, val error, per-layer profile."""
    from netrazor.measure import measure_model

    numbers = measure_model(model, adapter.input_shape, data=adapter.data, split="val", latency=latency)
    numbers["layer_profile"] = layer_profile(model, bits)
    return numbers


def default_run_dir(recipe: Recipe, root: str | Path = "runs") -> Path:
    return Path(root) / f"compress-{recipe.name}-seed{recipe.seed}"


def compress(
    recipe: Recipe,
    run_dir: str | Path | None = None,
    *,
    data=None,
    progress: Callable[..., None] | None = None,
    latency: bool = True,
    on_stage: Callable[[dict], None] | None = None,
    loggers: Sequence[Any] = (),
) -> CompressResult:
    """Run ``recipe``; resumes from ``run_dir`` when it holds a partial run of the same recipe.

    ``loggers``: metric sinks (``netrazor.train.tracking.tracking_callbacks(tensorboard=..., mlflow=...)``)
    that receive every epoch of every stage and each stage's measured numbers (see
    ``netrazor.pipeline.tracking``); they do not change what is computed or the resume.
    """
    from netrazor.surgery import load_model, save_model
    from netrazor.train import default_config

    run_dir = Path(run_dir) if run_dir else default_run_dir(recipe)
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe_json = recipe.model_dump(mode="json")
    state_path = run_dir / STATE_FILE
    if state_path.exists():
        state = read_json(state_path)
        if _what_runs(state.get("recipe") or {}) != _what_runs(recipe_json):
            raise RecipeError(
                f"{run_dir} holds a run of a different recipe; pass another --run-dir or delete that folder to start over."
            )
    else:
        state = {"recipe": recipe_json, "completed": []}
        write_json(state_path, state)

    if data is None:
        data = load_recipe_data(recipe)
    config = default_config(recipe.model.name or "custom", recipe.data.name)
    config = dataclasses.replace(config, **{**recipe.train, "seed": recipe.seed})  # the recipe seed wins
    tracker = PipelineTracker(loggers)
    progress = tracker.wrap_progress(progress)
    adapter = Adapter(data=data, train_config=config, progress=progress, run_dir=run_dir)
    teacher = teacher_provider(recipe, adapter, run_dir)

    artifacts: dict[str, Any] = {}
    completed: list[dict] = state["completed"]
    if completed:
        last = completed[-1]
        model = load_model(run_dir / last["model"])
        artifacts = dict(last.get("artifacts", {}))
        log.info("resuming %s after stage %d (%s)", run_dir, last["index"], last["kind"])
    else:
        torch.manual_seed(recipe.seed)
        model = build_recipe_model(recipe, data)

    before = measure_stage(model, adapter, latency) if not completed else completed[-1]["after"]
    dense = completed[0]["before"] if completed else before
    tracker.open({"recipe": recipe.name, "seed": recipe.seed, "stages": "+".join(st.kind for st in recipe.stages),
                  "resumed_after_stage": len(completed) - 1 if completed else "none"})
    tracker.log_stage(len(completed), before)
    try:
        for index, stage in enumerate(recipe.stages):
            if index < len(completed):
                continue
            stage_dir = run_dir / f"stage-{index}-{stage.kind}"
            stage_dir.mkdir(parents=True, exist_ok=True)
            torch.manual_seed(recipe.seed * 1000 + index)
            tracker.set_stage(index, stage.kind)
            ctx = StageContext(adapter=adapter, stage_dir=stage_dir, seed=recipe.seed, artifacts=artifacts, progress=progress,
                               teacher=teacher)
            log.info("stage %d: %s", index, stage.kind)
            started = time.perf_counter()
            model, stage_record = run_stage(stage.kind, stage.params, model, ctx)
            seconds = time.perf_counter() - started
            after = measure_stage(model, adapter, latency, (artifacts.get("quantisation") or {}).get("bits"))
            if "artifact_bytes" in stage_record:  # a stage that wrote an artifact: its bytes are the file's
                after["bytes"] = artifacts["bytes"] = stage_record["artifact_bytes"]
            model_path = stage_dir / "model"
            save_model(model, model_path)
            entry = {
                "index": index,
                "kind": stage.kind,
                "params": stage.params,
                "seconds": seconds,
                "before": before,
                "after": after,
                "record": _jsonable(stage_record),
                "model": str(model_path.relative_to(run_dir)),
                "artifacts": _jsonable(artifacts),
            }
            write_json(stage_dir / "record.json", entry)
            completed.append(entry)
            write_json(state_path, state)
            if on_stage:
                on_stage(entry)
            tracker.log_stage(index + 1, after)
            before = after
        final_test = adapter.evaluate(model, "test")
        tracker.log_final(len(recipe.stages), final_test["error"])
    except BaseException as exc:  # an interrupted run (resumable) or a failed one: end the tracked run honestly
        tracker.close("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    tracker.close("FINISHED")
    summary = {
        "recipe": recipe.name,
        "seed": recipe.seed,
        "dense": dense,
        "final": completed[-1]["after"] if completed else before,
        "test_error": final_test["error"],
        "artifact": artifacts.get("artifact"),
        "bytes": artifacts.get("bytes"),
        "expected": recipe.expected,
    }
    if teacher_record(run_dir).exists():
        summary["teacher"] = read_json(teacher_record(run_dir))
    write_json(run_dir / "summary.json", summary)
    return CompressResult(run_dir=run_dir, model=model, stages=completed, summary=summary, artifacts=artifacts)




def fork_run(source: str | Path, run_dir: str | Path, recipe: Recipe, stages: int) -> Path:
    """Start ``run_dir`` for ``recipe`` with the first ``stages`` completed stages of the run in ``source``.

    For variants of a recipe's later stages (other evolution targets, bit widths, ...): the shared
    prefix is copied instead of recomputed. It is only reused when it is what ``recipe`` itself would
    compute — same data, model, seed and training overrides, and the same kind and parameters for
    each of those stages (every stage is seeded from the recipe seed and its index) — else
    ``RecipeError`` names the difference. ``compress(recipe, run_dir)`` then runs the rest. Forking
    again into a run folder this same fork made returns it untouched, so the same command resumes.
    """
    import shutil

    source, run_dir = Path(source), Path(run_dir)
    state = read_json(source / STATE_FILE)
    completed = state.get("completed") or []
    if stages < 1 or stages > len(completed):
        raise RecipeError(f"{source} has {len(completed)} completed stage(s); cannot reuse {stages}. "
                          f"Pass --reuse between 1 and {len(completed)}.")
    theirs, ours = _what_runs(state.get("recipe") or {}), _what_runs(recipe.model_dump(mode="json"))
    forked_from = {"run": str(source), "stages": stages}
    if (run_dir / STATE_FILE).exists():
        mine = read_json(run_dir / STATE_FILE)
        if mine.get("forked_from") == forked_from and _what_runs(mine.get("recipe") or {}) == ours:
            return run_dir  # this fork was made before (and maybe interrupted): compress resumes it
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RecipeError(f"{run_dir} already exists and is not empty; pass another run folder or delete it.")
    # the teacher matters only to the stages that learn from it (checked below)
    for key in sorted((set(theirs) | set(ours)) - {"name", "stages", "teacher"}):
        if theirs.get(key) != ours.get(key):
            raise RecipeError(f"{source} was run with {key} = {theirs.get(key)!r}, this recipe has {ours.get(key)!r}: "
                              "its stages are not this recipe's. Fork from a run of the same "
                              f"{key}, or run the recipe from the start.")
    for index in range(stages):
        mine = ours["stages"][index] if index < len(ours["stages"]) else None
        if mine != theirs["stages"][index]:
            raise RecipeError(f"stage {index} differs: {source} ran {theirs['stages'][index]}, this recipe has {mine}; "
                              f"{_reuse_before(index)}.")
    same_teacher = theirs.get("teacher") == ours.get("teacher")
    learners = [i for i in range(stages) if stage_uses_teacher(recipe.stages[i].kind, recipe.stages[i].params)]
    if learners and not same_teacher:
        raise RecipeError(f"stage {learners[0]} learns from the teacher, and {source} was run with teacher = "
                          f"{theirs.get('teacher')!r}, this recipe has {ours.get('teacher')!r}; "
                          f"{_reuse_before(learners[0])}, or give both recipes the same teacher.")
    # Built beside the target and renamed into place: an interrupted copy never leaves a run folder
    # whose stage folders (with their training checkpoints) a later run would resume from.
    staging = run_dir.with_name(run_dir.name + ".fork-partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for entry in completed[:stages]:
        folder = Path(entry["model"]).parent
        shutil.copytree(source / folder, staging / folder)
    if same_teacher and teacher_record(source).exists():  # the same teacher: trained once
        shutil.copytree(source / TEACHER_DIR, staging / TEACHER_DIR)
    write_json(staging / STATE_FILE, {"recipe": recipe.model_dump(mode="json"), "completed": completed[:stages],
                                      "forked_from": forked_from})
    if run_dir.exists():
        run_dir.rmdir()  # empty (checked above)
    staging.rename(run_dir)
    log.info("forked %s from %s: stages 0-%d reused", run_dir, source, stages - 1)
    return run_dir


def _reuse_before(index: int) -> str:
    """The fix for a fork whose stage ``index`` is not the recipe's own."""
    return f"reuse only the stages before it (--reuse {index})" if index else "run the recipe from the start"


def _what_runs(recipe_json: dict) -> dict:
    """The parts of a recipe that change results (its description and expectations do not)."""
    return {k: v for k, v in recipe_json.items() if k not in ("description", "expected")}


def _jsonable(obj: Any) -> Any:
    """Drop what JSON cannot hold (tensors become lists, modules their class name)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist() if obj.numel() <= 4096 else f"<tensor {tuple(obj.shape)}>"
    if isinstance(obj, nn.Module):
        return type(obj).__name__
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
