"""benchmarks.compare.run_task end to end on synthetic data: the Torch-Pruning records land at the
reference (gates) MACs and carry where they landed and a measured latency breakdown.

Gates is replaced by a stand-in (a narrower LeNet-5) so the test is quick and the reference MACs are
known; data and the dense model are small synthetic stand-ins (no dataset download in tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("torch_pruning")

import netrazor.methods.gates as gates_module  # noqa: E402
from benchmarks import compare  # noqa: E402
from netrazor.data import make_synthetic  # noqa: E402
from netrazor.measure import count_macs  # noqa: E402
from netrazor.models import build_model  # noqa: E402
from netrazor.pipeline.recipe import load_recipe  # noqa: E402


class NarrowGates:
    """Stand-in for GatesMethod: 'prunes' to LeNet-5 at width 0.3 (no training)."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def run(self, model, adapter):
        torch.manual_seed(1)
        return build_model("lenet5", num_classes=10, in_channels=1, input_size=28, width_mult=0.3), {}


def _stand_ins(monkeypatch, *, n_train: int = 128, dense_width: float = 1.0, gates: bool = True):
    """Synthetic data, an untrained LeNet-5 as the cached dense model and (``gates``) NarrowGates for gates
    (not where a recipe is read: its validator checks the stages' knobs against GatesMethod's fields)."""
    data = make_synthetic(n_train=n_train, n_val=32, n_test=32, num_classes=10, shape=(1, 28, 28), seed=0)
    monkeypatch.setattr(compare, "load_data", lambda name: data)

    def tiny_dense(model_name, data, config, *, tag, width_mult=1.0):
        torch.manual_seed(0)
        return build_model(model_name, num_classes=10, in_channels=1, input_size=28, width_mult=dense_width).eval(), 0.0

    monkeypatch.setattr(compare, "dense_model", tiny_dense)
    if gates:
        monkeypatch.setattr(gates_module, "GatesMethod", NarrowGates)


def test_run_task_records_equal_macs_and_latency_reasons(tmp_path, monkeypatch):
    _stand_ins(monkeypatch)
    args = compare.parse_args(["--quick", "--methods", "gates,torch-pruning-magnitude", "--results", str(tmp_path)])
    compare.run_task("mnist-lenet5", 0, args)

    out = tmp_path / "mnist-lenet5"
    gates = json.loads((out / "compare-gates-seed0-quick.json").read_text())
    tp = json.loads((out / "compare-torch-pruning-magnitude-seed0-quick.json").read_text())
    target = count_macs(NarrowGates().run(None, None)[0], (1, 28, 28))
    assert gates["macs"] == target
    assert tp["extra"]["target_macs"] == target and tp["extra"]["reached_macs"] == tp["macs"]
    assert abs(tp["macs"] / target - 1) <= 0.05
    assert tp["extra"]["finetune_epochs"] == 1 and len(tp["extra"]["steps"]) == 1
    for rec in (gates, tp):  # both cut MACs > 1.1x: each has the breakdown and a reason per batch size
        assert set(rec["extra"]["latency_reason"]) == {"b1", "b64"}
        names = [row["name"] for row in rec["extra"]["latency_breakdown"]["b1"]["layers"]]
        assert "conv1" in names and "fc2" in names
    dense = json.loads((out / "compare-dense-seed0-quick.json").read_text())
    assert "latency_reason" not in dense.get("extra", {})


def test_sparsity_sweep_names_records_and_matches_epochs(tmp_path, monkeypatch):
    """--sparsities: one deep-compression and one chain record per sparsity, named by it; deep-compression
    fine-tunes as many epochs as the whole chain; the gates record is not rewritten when not asked for."""
    _stand_ins(monkeypatch)
    monkeypatch.chdir(tmp_path)  # the .nrz files go under runs/compare/
    args = compare.parse_args(["--quick", "--methods", "deep-compression,gates+evolution+pack",
                               "--sparsities", "0.9,0.99", "--results", str(tmp_path / "results")])
    compare.run_task("mnist-lenet5", 0, args)

    out = tmp_path / "results" / "mnist-lenet5"
    assert not (out / "compare-gates-seed0-quick.json").exists()
    for s in ("0.9", "0.99"):
        dc = json.loads((out / f"compare-deep-compression-s{s}-seed0-quick.json").read_text())
        chain = json.loads((out / f"compare-gates+evolution+pack-s{s}-seed0-quick.json").read_text())
        assert dc["extra"]["sparsity"] == chain["extra"]["sparsity"] == float(s)
        assert dc["extra"]["finetune_epochs"] == chain["extra"]["finetune_epochs"] == 3  # 1 gates + 2 x 1 evolution
        assert dc["bytes"] == dc["extra"]["encoded_bytes"] and chain["bytes"] == chain["extra"]["encoded_bytes"]
    sparse = json.loads((out / "compare-deep-compression-s0.99-seed0-quick.json").read_text())
    dense_ish = json.loads((out / "compare-deep-compression-s0.9-seed0-quick.json").read_text())
    assert sparse["bytes"] < dense_ish["bytes"]


def test_recipe_budget_gives_deep_compression_the_recipes_epochs(tmp_path, monkeypatch):
    """--dc-budget recipe: dense epochs + prune-retrain epochs = the shipped recipe's epochs in all."""
    _stand_ins(monkeypatch, n_train=64, dense_width=0.3, gates=False)
    monkeypatch.chdir(tmp_path)
    budget = compare.recipe_budget(load_recipe("mnist-lenet5"), 1)
    assert budget["recipe_epochs"] == 20 + 4 * 3 and budget["finetune_epochs"] == budget["recipe_epochs"] - 1
    args = compare.parse_args(["--quick", "--methods", "deep-compression", "--dc-budget", "recipe", "--dc-steps", "2",
                               "--sparsities", "0.9", "--results", str(tmp_path / "results")])
    compare.run_task("mnist-lenet5", 0, args)
    rec = json.loads((tmp_path / "results" / "mnist-lenet5" / "compare-deep-compression-recipe-budget-s0.9-seed0-quick.json").read_text())
    assert rec["extra"]["finetune_epochs"] == budget["finetune_epochs"] and rec["extra"]["steps"] == 2
    assert rec["extra"]["matched_to"] == "recipe" and rec["extra"]["tolerance"] == 0.001


def test_recipe_budget_counts_the_epochs_of_a_teacher_the_recipe_trains(tmp_path):
    """A recipe that trains its own teacher spends those epochs too; a checkpoint teacher costs the run nothing."""
    from netrazor.pipeline import parse_recipe
    from netrazor.surgery import save_model

    save_model(build_model("lenet300", num_classes=10), tmp_path / "m")

    text = (Path(__file__).resolve().parents[1] / "benchmarks" / "variants" / "mnist-lenet300-shift-distill0.5.yaml").read_text()
    plain = compare.recipe_budget(load_recipe("mnist-lenet300-shift"), 20)
    distilled = compare.recipe_budget(parse_recipe(text), 20)
    assert distilled["recipe_epochs"] == plain["recipe_epochs"] + 20
    loaded = compare.recipe_budget(parse_recipe(text.replace("{train: {epochs: 20}}", f"{{checkpoint: {tmp_path / 'm'}}}")), 20)
    assert loaded["recipe_epochs"] == plain["recipe_epochs"]


def test_recipe_budget_counts_a_stage_without_epochs_at_the_recipes_own_train_epochs():
    """A gates or train stage without ``epochs`` trains the recipe-level ``train: {epochs: N}`` (GatesMethod and the
    adapter honour it), so the budget must count N, not the model's default."""
    from netrazor.pipeline import parse_recipe

    text = ("name: budget-probe\nmodel: {{name: lenet300}}\ndata: {{name: mnist}}\nseed: 0\n{train}"
            "stages:\n  - gates: {{kappa: 0.5}}\n  - quantise: {{qat_epochs: 2}}\n")
    default = compare.default_config("lenet300", "mnist").epochs
    assert compare.recipe_budget(parse_recipe(text.format(train="")), 1)["recipe_epochs"] == default + 2
    assert compare.recipe_budget(parse_recipe(text.format(train="train: {epochs: 7}\n")), 1)["recipe_epochs"] == 7 + 2


def test_recipe_variant_trains_everything_its_way_and_files_under_its_name(tmp_path, monkeypatch):
    """--recipe mnist-lenet5-shift: the dense model and deep-compression train on shifted digits, the budget is
    the variant's, and the records go under the variant's name (beside its compress_bench records)."""
    _stand_ins(monkeypatch, n_train=64, dense_width=0.3, gates=False)
    seen = {}
    tiny_dense = compare.dense_model

    def dense_seen(model_name, data, config, *, tag, width_mult=1.0):
        seen.update(augment=config.augment, tag=tag)
        return tiny_dense(model_name, data, config, tag=tag, width_mult=width_mult)

    monkeypatch.setattr(compare, "dense_model", dense_seen)
    monkeypatch.chdir(tmp_path)
    args = compare.parse_args(["--quick", "--tasks", "mnist-lenet5", "--recipe", "mnist-lenet5-shift",
                               "--methods", "deep-compression", "--dc-budget", "recipe", "--dc-steps", "1",
                               "--sparsities", "0.9", "--results", str(tmp_path / "results")])
    compare.run_task("mnist-lenet5", 0, args)
    assert seen["augment"] == "shift" and seen["tag"].startswith("compare-mnist-lenet5-shift-")
    rec = json.loads((tmp_path / "results" / "mnist-lenet5-shift" / "compare-deep-compression-recipe-budget-s0.9-seed0-quick.json").read_text())
    assert rec["task"] == "mnist-lenet5-shift" and rec["extra"]["training_overrides"] == {"augment": "shift"}
    assert rec["extra"]["recipe"] == "mnist-lenet5-shift" and rec["extra"]["recipe_epochs"] == 60 + 4 * 3 + 5
    with pytest.raises(SystemExit):
        compare.main(["--tasks", "mnist-lenet5,mnist-lenet300", "--recipe", "mnist-lenet5-shift"])
    with pytest.raises(SystemExit, match="not the task's lenet5"):
        compare.run_task("mnist-lenet5", 0, compare.parse_args(["--quick", "--recipe", "mnist-lenet300-shift"]))


def test_gates_knobs_finetune_lr_and_tag_reach_every_contender(tmp_path, monkeypatch):
    """--gates-set goes over the task's own gates knobs, --finetune-lr sets every contender's fine-tuning lr
    (not the dense model's), and --tag suffixes every record name but the dense model's (the same for every tag)."""
    _stand_ins(monkeypatch)
    seen = {}

    class Recording(NarrowGates):
        def run(self, model, adapter):
            seen.update(knobs=self.kwargs, lr=adapter.train_config.lr)
            return super().run(model, adapter)[0], {"removed_sections": ["layer9"]}

    monkeypatch.setattr(gates_module, "GatesMethod", Recording)
    monkeypatch.setitem(compare.TASKS, "mnist-lenet5", {**compare.TASKS["mnist-lenet5"], "gates": {"kappa": 1.0, "layers": True}})
    args = compare.parse_args(["--quick", "--methods", "gates,torch-pruning-taylor", "--gates-set", "kappa=1.5",
                               "--finetune-lr", "0.003", "--tag=-k1.5", "--results", str(tmp_path)])
    compare.run_task("mnist-lenet5", 0, args)

    assert seen["knobs"] == {"kappa": 1.5, "layers": True, "epochs": 1, "seed": 0} and seen["lr"] == 0.003
    out = tmp_path / "mnist-lenet5"
    assert sorted(p.name for p in out.iterdir()) == ["compare-dense-seed0-quick.json"] + [
        f"compare-{m}-k1.5-seed0-quick.json" for m in ("gates", "torch-pruning-taylor")]
    gates = json.loads((out / "compare-gates-k1.5-seed0-quick.json").read_text())
    assert gates["extra"]["gates_knobs"] == {"kappa": 1.5, "layers": True} and gates["extra"]["finetune_lr"] == 0.003
    assert gates["extra"]["removed_sections"] == ["layer9"]  # what the method reported it removed
    with pytest.raises(SystemExit):
        compare.parse_args(["--gates-set", "kappa"])  # not KEY=VALUE


def test_a_mistyped_gates_knob_stops_before_the_dense_model_trains(tmp_path, monkeypatch):
    _stand_ins(monkeypatch, gates=False)
    trained = []
    monkeypatch.setattr(compare, "dense_model", lambda *a, **k: trained.append(1))
    args = compare.parse_args(["--quick", "--methods", "gates", "--gates-set", "kapa=1", "--results", str(tmp_path)])
    with pytest.raises(SystemExit, match="kapa"):
        compare.run_task("mnist-lenet5", 0, args)
    assert not trained and not list(tmp_path.iterdir())
    assert compare.TASKS["cifar10-resnet20"]["gates"]["layers"] is True  # ResNet-20 gates whole sections
