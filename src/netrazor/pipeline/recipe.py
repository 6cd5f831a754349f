"""Recipes: a YAML file that names the data, the model and a list of stages.

Validated with pydantic *before any work starts*; errors name the field (and the
line in the YAML where we can find it) and what to write instead.

Example::

    name: mnist-lenet5
    data: {name: mnist}
    model: {name: lenet5}
    seed: 0
    train: {epochs: 4}            # overrides of the default training recipe
    stages:
      - train: {}
      - gates: {kappa: 1.0}
      - quantise: {tolerance: 0.002}
      - pack: {}

A stage that learns from a teacher (``gates`` with ``distill_alpha`` > 0, ``evolution`` with
``teacher: recipe``) uses the recipe's ``teacher``::

    teacher: {train: {epochs: 20}}          # a dense copy of the model, trained first in the run
    teacher: {checkpoint: runs/dense/model} # or a model saved by netrazor
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from netrazor.errors import RecipeError


class DataSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    root: str | None = None
    val_size: int = Field(5000, ge=1)
    seed: int = 0


class ModelSpec(BaseModel):
    """A zoo model by ``name`` or the user's own factory by ``factory: "package.module:function"``."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    factory: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None  # start from trained weights instead of training

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        if (self.name is None) == (self.factory is None):
            raise ValueError("give exactly one of `name` (a zoo model) or `factory` (\"module:function\")")
        if self.factory is not None and ":" not in self.factory:
            raise ValueError("`factory` must look like \"package.module:function\"")
        return self


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)


class TeacherSpec(BaseModel):
    """The trained model that stages learn from (``gates`` with ``distill_alpha`` > 0, ``evolution`` with
    ``teacher: recipe``).

    ``train``: overrides of the recipe's training for a dense copy of the recipe's model, trained in the
    run folder before the first stage that needs it (its epochs count in the recipe's budget);
    ``checkpoint``: a model saved by netrazor (safetensors + JSON) to use instead of training one.
    """

    model_config = ConfigDict(extra="forbid")
    train: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "TeacherSpec":
        if self.checkpoint is not None and self.train:
            raise ValueError("give `checkpoint` (a trained model) or `train` (how to train one), not both")
        return self


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    data: DataSpec
    model: ModelSpec
    seed: int = 0
    train: dict[str, Any] = Field(default_factory=dict)
    teacher: TeacherSpec | None = None
    stages: list[StageSpec]
    # What the recipe is expected to give, for the report (never used for decisions).
    expected: dict[str, Any] = Field(default_factory=dict)

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_list(cls, value: Any) -> Any:
        # YAML form: `- gates: {kappa: 1}`  ->  StageSpec(kind="gates", params={...})
        if not isinstance(value, list) or not value:
            raise ValueError("`stages` must be a non-empty list such as `- train: {}`")
        out = []
        for item in value:
            if isinstance(item, str):
                out.append({"kind": item, "params": {}})
            elif isinstance(item, dict) and len(item) == 1 and "kind" not in item:
                (kind, params), = item.items()
                out.append({"kind": kind, "params": params or {}})
            else:
                out.append(item)
        return out


def _yaml_line(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip().lstrip("- ").strip()
        if stripped.startswith(f"{key}:") or stripped == key:
            return number
    return None


def parse_recipe(text: str, source: str = "<recipe>") -> Recipe:
    """Parse and validate recipe YAML; stage kinds and their parameters are checked too."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source}: not valid YAML ({exc}). Fix the syntax at the line shown.") from exc
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping with keys name, data, model, stages.")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            key = str(err["loc"][-1]) if err["loc"] else ""
            line = _yaml_line(text, key) if key and not key.isdigit() else None
            where = f" (line {line})" if line else ""
            hint = ""
            if err["type"] == "extra_forbidden":
                fields = _fields_for(err["loc"])
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f"; did you mean `{close[0]}`?" if close else f"; allowed: {', '.join(fields)}"
            problems.append(f"`{loc}`{where}: {err['msg']}{hint}")
        raise RecipeError(f"{source}: invalid recipe:\n  " + "\n  ".join(problems)) from exc
    from netrazor.pipeline.stages import validate_stages

    validate_stages(recipe, source)
    return recipe


def _fields_for(loc: tuple) -> list[str]:
    model: type[BaseModel] = Recipe
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        # an optional section (`teacher: TeacherSpec | None`) names its model inside the union
        found = [a for a in (ann, *get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if found:
            model = found[0]
        else:
            break
    return sorted(model.model_fields)


def load_recipe(path_or_name: str | Path) -> Recipe:
    """Load a recipe from a path, or a shipped recipe by name (see ``shipped_recipes()``)."""
    path = Path(path_or_name)
    if not path.exists():
        shipped = shipped_recipes()
        if str(path_or_name) in shipped:
            path = shipped[str(path_or_name)]
        else:
            close = difflib.get_close_matches(str(path_or_name), list(shipped), n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise RecipeError(
                f"recipe {path_or_name!r} not found: give a YAML path or one of the shipped recipes "
                f"({', '.join(sorted(shipped))}).{hint}"
            )
    return parse_recipe(path.read_text(encoding="utf-8"), source=str(path))


def shipped_recipes() -> dict[str, Path]:
    folder = Path(__file__).resolve().parent.parent / "recipes"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}
