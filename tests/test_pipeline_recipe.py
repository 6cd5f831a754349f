"""Recipe validation: every mistake fails before any work starts, naming the problem."""

import pytest

from netrazor.errors import RecipeError
from netrazor.pipeline import load_recipe, parse_recipe, shipped_recipes

GOOD = """
name: tiny
data: {name: synthetic}
model: {name: lenet5}
train: {epochs: 1}
stages:
  - train: {epochs: 1}
  - pack: {}
"""


def test_good_recipe_parses_stages_in_order():
    recipe = parse_recipe(GOOD)
    assert [s.kind for s in recipe.stages] == ["train", "pack"]
    assert recipe.stages[0].params == {"epochs": 1}


def test_unknown_stage_is_named_with_a_suggestion():
    with pytest.raises(RecipeError, match=r"unknown stage `trian`.*Did you mean `train`"):
        parse_recipe(GOOD.replace("- train: {epochs: 1}", "- trian: {epochs: 1}"))


def test_typo_in_top_level_field_names_the_line_and_suggests():
    bad = GOOD.replace("stages:", "stagse:")
    with pytest.raises(RecipeError) as info:
        parse_recipe(bad)
    message = str(info.value)
    assert "stagse" in message and "line 6" in message and "stages" in message


def test_typo_in_stage_parameter_is_named():
    with pytest.raises(RecipeError, match=r"stage `train` has no parameter `epohcs`.*`epochs`"):
        parse_recipe(GOOD.replace("- train: {epochs: 1}", "- train: {epohcs: 1}"))


def test_typo_in_recipe_level_train_override_is_named():
    with pytest.raises(RecipeError, match=r"no parameter `lrr`"):
        parse_recipe(GOOD.replace("train: {epochs: 1}\n", "train: {lrr: 0.1}\n", 1))


def test_model_needs_exactly_one_source():
    with pytest.raises(RecipeError, match="exactly one"):
        parse_recipe(GOOD.replace("model: {name: lenet5}", "model: {name: lenet5, factory: 'a.b:c'}"))


def test_a_model_checkpoint_that_does_not_exist_fails_when_the_recipe_is_parsed(tmp_path):
    from netrazor.models import build_model
    from netrazor.surgery import save_model

    with pytest.raises(RecipeError, match=r"model checkpoint 'no/such/model' not found"):
        parse_recipe(GOOD.replace("{name: lenet5}", "{name: lenet5, checkpoint: no/such/model}"))
    save_model(build_model("lenet5", num_classes=10), tmp_path / "m")
    assert parse_recipe(GOOD.replace("{name: lenet5}", f"{{name: lenet5, checkpoint: {tmp_path / 'm'}}}")).model.checkpoint


def test_invalid_yaml_is_reported_as_recipe_error():
    with pytest.raises(RecipeError, match="not valid YAML"):
        parse_recipe("name: [unclosed")


def test_missing_recipe_file_suggests_shipped_names():
    with pytest.raises(RecipeError, match="not found"):
        load_recipe("no-such-recipe-anywhere")


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_every_shipped_recipe_validates(name):
    recipe = load_recipe(name)
    assert recipe.stages and recipe.expected, f"{name} must state what it is expected to give"


def test_bad_method_knob_value_is_a_recipe_error_before_work_starts():
    recipe = GOOD.replace("- pack: {}", "- evolution: {population: 0}\n  - pack: {}")
    with pytest.raises(RecipeError, match="evolution"):
        parse_recipe(recipe)
