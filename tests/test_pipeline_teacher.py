"""A recipe's `teacher:`: trained once per run folder, handed to distilling stages, checked before work starts."""

import pytest

import netrazor.methods.gates.method as gates_method
import netrazor.pipeline.teacher as teacher_module
from netrazor.errors import RecipeError
from netrazor.pipeline import compress, parse_recipe
from pipeline_interrupt import interrupted_at

RECIPE = """
name: tiny-distill
data: {name: synthetic}
model: {factory: "pipeline_factories:tiny_cnn", kwargs: {num_classes: 4}}
seed: 1
train: {epochs: 2, batch_size: 32, lr: 0.05}
teacher: {train: {epochs: 3}}
stages:
  - gates: {epochs: 2, finetune: 0.5, distill_alpha: 0.5, plots: false}
  - evolution: {targets: 0.5, cycles: 1, finetune_epochs: 1, population: 4, elite: 2, generations: 1,
                candidate_size: 0.25, eval_size: 64, teacher: recipe}
  - quantise: {bits: 4}
"""


@pytest.fixture(scope="module")
def data():
    from netrazor.data import make_synthetic

    return make_synthetic(n_train=400, n_val=200, n_test=200)


def test_gates_and_evolution_learn_from_one_teacher_trained_once_in_the_run(tmp_path, data, monkeypatch):
    import netrazor.methods.evolution.method as evolution_method

    seen = {}
    for name, cls in (("gates", gates_method.GatesMethod), ("evolution", evolution_method.EvolutionMethod)):
        def spy(self, model, adapter, teacher=None, _real=cls.run, _name=name):
            seen[_name] = teacher
            return _real(self, model, adapter, teacher=teacher)

        monkeypatch.setattr(cls, "run", spy)
    result = compress(parse_recipe(RECIPE), tmp_path / "run", data=data, latency=False)
    assert seen["gates"] is not None and seen["evolution"] is seen["gates"]
    record = result.summary["teacher"]
    assert record["epochs"] == 3 and record["val_error"] < 0.5  # learnable: chance is 0.75
    assert (tmp_path / "run" / "teacher" / "model.safetensors").exists()


def test_a_resumed_run_loads_its_teacher_instead_of_training_it_again(tmp_path, data, monkeypatch):
    import netrazor.pipeline.runner as runner

    recipe = parse_recipe(RECIPE)
    with interrupted_at(monkeypatch, "quantise"):
        compress(recipe, tmp_path / "run", data=data, latency=False)
    # the teacher trained before the crash is on disk: asking for it again loads it, nothing is built
    def no_build(*args):
        raise AssertionError("the teacher was trained again")

    monkeypatch.setattr(runner, "build_recipe_model", no_build)
    provider = teacher_module.teacher_provider(recipe, _adapter(data, tmp_path / "run"), tmp_path / "run")
    assert provider() is provider()  # loaded once, then kept
    resumed = compress(recipe, tmp_path / "run", data=data, latency=False)
    assert [s["kind"] for s in resumed.stages] == ["gates", "evolution", "quantise"]


def _adapter(data, run_dir):
    from netrazor.methods.base import Adapter
    from netrazor.train import default_config

    return Adapter(data=data, train_config=default_config("custom", "synthetic"), run_dir=run_dir)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.replace("teacher: {train: {epochs: 3}}\n", ""), "recipe has none"),
    (lambda r: r.replace("distill_alpha: 0.5", "distill_alpha: 0.0").replace("teacher: recipe", "teacher: input"),
     "no stage distils"),
    (lambda r: r.replace("{train: {epochs: 3}}", "{train: {epochs: 3}, checkpoint: m}"), "not both"),
    (lambda r: r.replace("{train: {epochs: 3}}", "{train: {epoch: 3}}"), "epochs"),
    (lambda r: r.replace("{train: {epochs: 3}}", "{trian: {epochs: 3}}"), "train"),
    (lambda r: r.replace("{train: {epochs: 3}}", "{checkpoint: no/such/model}"), "not found"),
])
def test_teacher_mistakes_fail_before_any_work(edit, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(edit(RECIPE))


def test_evolution_refuses_a_teacher_it_was_not_told_to_use_and_a_missing_one(data):
    from torch import nn

    from netrazor.errors import ConfigError
    from netrazor.methods.evolution import EvolutionMethod

    model = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 4))
    with pytest.raises(ConfigError, match="teacher='recipe'"):
        EvolutionMethod(teacher="recipe").run(model, _adapter(data, None))
    with pytest.raises(ConfigError, match="teacher='input'"):
        EvolutionMethod().run(model, _adapter(data, None), teacher=model)
    assert EvolutionMethod.uses_teacher({"teacher": "recipe"}) and not EvolutionMethod.uses_teacher({})


def test_a_fork_reuses_stages_that_never_saw_the_teacher_and_refuses_those_that_did(tmp_path, data):
    from netrazor.pipeline import fork_run

    plain = RECIPE.replace("teacher: {train: {epochs: 3}}\n", "").replace("distill_alpha: 0.5", "distill_alpha: 0.0")
    plain = plain.replace("teacher: recipe", "teacher: input")
    compress(parse_recipe(plain), tmp_path / "plain", data=data, latency=False)
    # a variant whose evolution learns from a dense teacher: the gates stage it shares never used one
    variant = parse_recipe(plain.replace("stages:\n", "teacher: {train: {epochs: 3}}\nstages:\n")
                           .replace("teacher: input", "teacher: recipe"))
    forked = compress(variant, fork_run(tmp_path / "plain", tmp_path / "fork", variant, 1), data=data, latency=False)
    assert forked.summary["teacher"]["epochs"] == 3
    # its evolution stage learned from that teacher: a recipe with another teacher may reuse only the gates
    other = parse_recipe(plain.replace("stages:\n", "teacher: {train: {epochs: 2}}\nstages:\n")
                         .replace("teacher: input", "teacher: recipe"))
    with pytest.raises(RecipeError, match=r"stage 1 learns from the teacher.*--reuse 1"):
        fork_run(tmp_path / "fork", tmp_path / "other", other, 2)
    fork_run(tmp_path / "fork", tmp_path / "other", other, 1)
    assert not (tmp_path / "other" / "teacher").exists()  # not this recipe's teacher: it trains its own
