"""End to end: a recipe on synthetic data trains, quantises, packs, reports, and resumes exactly."""

import pytest

import netrazor.pipeline.runner as runner
from netrazor.errors import RecipeError
from netrazor.pipeline import compress, parse_recipe, write_report
from pipeline_interrupt import interrupted_at

RECIPE = """
name: tiny-synthetic
data: {name: synthetic}
model: {factory: "pipeline_factories:tiny_cnn", kwargs: {num_classes: 4}}
seed: 3
train: {epochs: 4, batch_size: 32, lr: 0.05}
stages:
  - train: {}
  - quantise: {bits: 4}
  - pack: {}
expected: {test_error: "< 0.3"}
"""


@pytest.fixture(scope="module")
def data():
    from netrazor.data import make_synthetic

    return make_synthetic(n_train=600, n_val=200, n_test=200)


def test_compress_end_to_end_writes_artifact_and_report(tmp_path, data):
    recipe = parse_recipe(RECIPE)
    result = compress(recipe, tmp_path / "run", data=data, latency=False)
    assert [s["kind"] for s in result.stages] == ["train", "quantise", "pack"]
    assert result.summary["test_error"] < 0.3  # learnable task: chance is 0.75
    dense_bytes = result.stages[0]["before"]["bytes"]
    # 4-bit codes beat float32 even with the architecture spec and checksums of a tiny model
    assert 0 < result.summary["bytes"] < dense_bytes / 2
    html_path, md_path = write_report(result.run_dir)
    page = html_path.read_text()
    assert "<img" in page and "http://" not in page and "https://" not in page
    assert "pack" in md_path.read_text()


def test_interrupted_compress_resumes_to_identical_artifact(tmp_path, data, monkeypatch):
    recipe = parse_recipe(RECIPE)
    clean = compress(recipe, tmp_path / "clean", data=data, latency=False)

    with interrupted_at(monkeypatch, "pack"):
        compress(recipe, tmp_path / "resumed", data=data, latency=False)
    resumed = compress(recipe, tmp_path / "resumed", data=data, latency=False)
    assert len(resumed.stages) == 3
    clean_bytes = (tmp_path / "clean" / "stage-2-pack" / "model.nrz").read_bytes()
    resumed_bytes = (tmp_path / "resumed" / "stage-2-pack" / "model.nrz").read_bytes()
    assert clean_bytes == resumed_bytes


def test_run_dir_of_another_recipe_is_refused(tmp_path, data):
    recipe = parse_recipe(RECIPE)
    compress(parse_recipe(RECIPE.replace("bits: 4", "bits: 3")), tmp_path / "run", data=data, latency=False)
    with pytest.raises(RecipeError, match="different recipe"):
        compress(recipe, tmp_path / "run", data=data, latency=False)


def test_editing_only_description_or_expectations_still_resumes(tmp_path, data):
    compress(parse_recipe(RECIPE), tmp_path / "run", data=data, latency=False)
    edited = RECIPE.replace('expected: {test_error: "< 0.3"}', 'description: now documented\nexpected: {measured: "x"}')
    resumed = compress(parse_recipe(edited), tmp_path / "run", data=data, latency=False)
    assert len(resumed.stages) == 3


def test_compress_logs_every_stage_to_tensorboard_and_mlflow(tmp_path, data, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from netrazor.train.tracking import tracking_callbacks

    monkeypatch.chdir(tmp_path)  # mlflow's default artifact folder lands in the working directory
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    loggers = tracking_callbacks(tensorboard=tmp_path / "tb", mlflow=uri, run_name="tiny")
    epochs_seen = []  # what the progress bar got: the tracker must pass every event on unchanged
    result = compress(parse_recipe(RECIPE), tmp_path / "run", data=data, latency=False, loggers=loggers,
                      progress=lambda e: epochs_seen.append(e) if e.get("event") == "epoch_end" else None)
    params_after = [result.stages[0]["before"]["params"]] + [s["after"]["params"] for s in result.stages]
    bytes_after = [result.stages[0]["before"]["bytes"]] + [s["after"]["bytes"] for s in result.stages]

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("stage/params")] == [0, 1, 2, 3]
    assert [e.value for e in acc.Scalars("stage/params")] == pytest.approx(params_after)
    assert [e.value for e in acc.Scalars("stage/bytes")] == pytest.approx(bytes_after)
    # the train stage's 4 epochs, on the pipeline-wide epoch axis
    assert [e.step for e in acc.Scalars("stage-0-train/val_acc")] == [0, 1, 2, 3]
    assert acc.Scalars("final/test_error")[0].value == pytest.approx(result.summary["test_error"], rel=1e-6)

    client = MlflowClient(uri)
    run = client.get_run(loggers[1].run_id)
    assert run.info.status == "FINISHED" and run.data.params["stages"] == "train+quantise+pack"
    points = sorted(client.get_metric_history(run.info.run_id, "stage/bytes"), key=lambda m: m.step)
    assert [m.value for m in points] == pytest.approx(bytes_after)
    epochs = sorted(client.get_metric_history(run.info.run_id, "stage-0-train/val_loss"), key=lambda m: m.step)
    assert len(epochs_seen) == 4
    assert [m.value for m in epochs] == pytest.approx([e["val_loss"] for e in epochs_seen], rel=1e-12)


def test_failed_compress_ends_the_tracked_run_as_failed(tmp_path, data, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from netrazor.train.tracking import MLflowLogger

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def broken(kind, params, model, ctx):
        raise RuntimeError("stage broke")

    monkeypatch.setattr(runner, "run_stage", broken)
    logger = MLflowLogger(uri, run_name="broken")
    with pytest.raises(RuntimeError):
        compress(parse_recipe(RECIPE), tmp_path / "run", data=data, latency=False, loggers=[logger])
    assert MlflowClient(uri).get_run(logger.run_id).info.status == "FAILED"


def test_a_fork_reuses_the_shared_stages_and_ends_with_the_bytes_of_a_full_run(tmp_path, data, monkeypatch):
    from netrazor.pipeline import fork_run

    compress(parse_recipe(RECIPE), tmp_path / "base", data=data, latency=False)
    variant = parse_recipe(RECIPE.replace("bits: 4", "bits: 3").replace("tiny-synthetic", "tiny-3bit"))
    full = compress(variant, tmp_path / "full", data=data, latency=False)

    ran = []
    real_run_stage = runner.run_stage
    monkeypatch.setattr(runner, "run_stage", lambda kind, *a: (ran.append(kind), real_run_stage(kind, *a))[1])
    fork_run(tmp_path / "base", tmp_path / "fork", variant, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "fork", "full"]  # no staging folder left
    forked = compress(variant, tmp_path / "fork", data=data, latency=False)
    assert ran == ["quantise", "pack"]  # the train stage was copied, not run again
    assert (tmp_path / "fork" / "stage-2-pack" / "model.nrz").read_bytes() == \
        (tmp_path / "full" / "stage-2-pack" / "model.nrz").read_bytes()
    assert forked.summary["test_error"] == full.summary["test_error"]


def test_a_fork_refuses_stages_that_are_not_the_recipes_own(tmp_path, data):
    from netrazor.pipeline import fork_run

    compress(parse_recipe(RECIPE), tmp_path / "base", data=data, latency=False)
    variant = parse_recipe(RECIPE.replace("bits: 4", "bits: 3"))
    with pytest.raises(RecipeError, match=r"stage 1 differs.*--reuse 1"):
        fork_run(tmp_path / "base", tmp_path / "a", variant, 2)
    with pytest.raises(RecipeError, match="stage 0 differs.*from the start"):
        fork_run(tmp_path / "base", tmp_path / "e", parse_recipe(RECIPE.replace("train: {}", "train: {epochs: 1}")), 1)
    with pytest.raises(RecipeError, match="seed"):
        fork_run(tmp_path / "base", tmp_path / "b", parse_recipe(RECIPE.replace("seed: 3", "seed: 4")), 1)
    with pytest.raises(RecipeError, match="3 completed stage"):
        fork_run(tmp_path / "base", tmp_path / "c", variant, 4)
    fork_run(tmp_path / "base", tmp_path / "d", variant, 1)
    with pytest.raises(RecipeError, match="not empty"):  # a folder this fork did not make
        fork_run(tmp_path / "base", tmp_path / "d", parse_recipe(RECIPE.replace("bits: 4", "bits: 2")), 1)


def test_the_same_fork_again_resumes_the_run_it_made(tmp_path, data, monkeypatch):
    from netrazor.pipeline import fork_run

    compress(parse_recipe(RECIPE), tmp_path / "base", data=data, latency=False)
    variant = parse_recipe(RECIPE.replace("bits: 4", "bits: 3"))
    fork_run(tmp_path / "base", tmp_path / "fork", variant, 1)
    with interrupted_at(monkeypatch, "pack"):
        compress(variant, tmp_path / "fork", data=data, latency=False)
    fork_run(tmp_path / "base", tmp_path / "fork", variant, 1)  # the command run again: no error, nothing redone
    resumed = compress(variant, tmp_path / "fork", data=data, latency=False)
    assert [s["kind"] for s in resumed.stages] == ["train", "quantise", "pack"]
