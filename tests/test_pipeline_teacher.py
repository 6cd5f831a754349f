"""A recipe's `teacher:`: trained once per run folder, handed to distilling stages, checked before work starts."""

import pytest

import netrazor.methods.gates.method as gates_method
import netrazor.pipeline.teacher as teacher_module
from netrazor.errors import RecipeError
from netrazor.pipeline import compress, parse_recipe

RECIPE = """
name: tiny-distill
data: {name: synthetic}
model: {factory: "pipeline_factories:tiny_cnn", kwargs: {num_classes: 4}}
seed: 1
train: {epochs: 2, batch_size: 32, lr: 0.05}
teacher: {train: {epochs: 3}}
stages:
  - gates: {epochs: 2, finetune: 0.5, distill_alpha: 0.5, plots: false}
  - quantise: {bits: 4}
"""


@pytest.fixture(scope="module")
def data():
    from netrazor.data import make_synthetic

    return make_synthetic(n_train=400, n_val=200, n_test=200)


def test_the_gates_stage_distils_from_a_teacher_trained_once_in_the_run(tmp_path, data, monkeypatch):
    seen = []
    real_run = gates_method.GatesMethod.run

    def spy(self, model, adapter, teacher=None):
        seen.append(teacher)
        return real_run(self, model, adapter, teacher=teacher)

    monkeypatch.setattr(gates_method.GatesMethod, "run", spy)
    result = compress(parse_recipe(RECIPE), tmp_path / "run", data=data, latency=False)
    assert len(seen) == 1 and seen[0] is not None
    record = result.summary["teacher"]
    assert record["epochs"] == 3 and record["val_error"] < 0.5  # learnable: chance is 0.75
    assert (tmp_path / "run" / "teacher" / "model.safetensors").exists()


def test_a_resumed_run_loads_its_teacher_instead_of_training_it_again(tmp_path, data, monkeypatch):
    import netrazor.pipeline.runner as runner

    recipe = parse_recipe(RECIPE)
    real_run_stage = runner.run_stage

    def crash_on_quantise(kind, params, model, ctx):
        if kind == "quantise":
            raise KeyboardInterrupt
        return real_run_stage(kind, params, model, ctx)

    monkeypatch.setattr(runner, "run_stage", crash_on_quantise)
    with pytest.raises(KeyboardInterrupt):
        compress(recipe, tmp_path / "run", data=data, latency=False)
    monkeypatch.setattr(runner, "run_stage", real_run_stage)
    # the teacher trained before the crash is on disk: asking for it again loads it, nothing is built
    def no_build(*args):
        raise AssertionError("the teacher was trained again")

    monkeypatch.setattr(runner, "build_recipe_model", no_build)
    provider = teacher_module.teacher_provider(recipe, _adapter(data, tmp_path / "run"), tmp_path / "run")
    assert provider() is provider()  # loaded once, then kept
    resumed = compress(recipe, tmp_path / "run", data=data, latency=False)
    assert [s["kind"] for s in resumed.stages] == ["gates", "quantise"]


def _adapter(data, run_dir):
    from netrazor.methods.base import Adapter
    from netrazor.train import default_config

    return Adapter(data=data, train_config=default_config("custom", "synthetic"), run_dir=run_dir)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.replace("teacher: {train: {epochs: 3}}\n", ""), "no teacher"),
    (lambda r: r.replace("distill_alpha: 0.5", "distill_alpha: 0.0"), "no stage distils"),
    (lambda r: r.replace("{train: {epochs: 3}}", "{train: {epochs: 3}, checkpoint: m}"), "not both"),
    (lambda r: r.replace("{train: {epochs: 3}}", "{train: {epoch: 3}}"), "epochs"),
    (lambda r: r.replace("{train: {epochs: 3}}", "{trian: {epochs: 3}}"), "train"),
])
def test_teacher_mistakes_fail_before_any_work(edit, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(edit(RECIPE))
