"""Runtime measures: latency statistics, evaluation on an ImageSet, measure_model, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from netrazor.data import make_synthetic
from netrazor.errors import ConfigError, DataError
from netrazor.measure import evaluate, latency_ms, measure_model, normalize
from netrazor.models import build_model
from netrazor.surgery import save_model


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_train=200, n_val=120, n_test=90, num_classes=4, shape=(1, 16, 16), seed=3)


class ConstantClass(nn.Module):
    """Predicts ``cls`` for every input, with logits [0, ..., 5, ..., 0]."""

    def __init__(self, num_classes: int, cls: int):
        super().__init__()
        self.num_classes, self.cls = num_classes, cls
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.clone())
        logits = torch.zeros(len(x), self.num_classes)
        logits[:, self.cls] = 5.0
        return logits


def test_latency_reports_sane_statistics():
    model = build_model("lenet5").train()
    b1 = latency_ms(model, (1, 28, 28), batch_size=1, repeats=10, warmup=2)
    b64 = latency_ms(model, (1, 28, 28), batch_size=64, repeats=5, warmup=1)
    for t in (b1, b64):
        assert 0 < t["p10"] <= t["median"] <= t["p90"]
        assert t["threads"] == torch.get_num_threads()
    assert b1["batch_size"] == 1 and b1["repeats"] == 10
    # 64x the work: the ratio within one run is safe to compare even on a noisy machine.
    assert b64["median"] > b1["median"]
    assert all(m.training for m in model.modules())  # mode restored


@pytest.mark.parametrize("kwargs", [{"repeats": 0}, {"batch_size": 0}, {"warmup": -1}])
def test_latency_rejects_bad_knobs(kwargs):
    with pytest.raises(ConfigError):
        latency_ms(build_model("lenet300"), (1, 28, 28), **kwargs)


def test_evaluate_counts_accuracy_and_loss_exactly(data):
    model = ConstantClass(4, cls=2)
    result = evaluate(model, data.val, data.mean, data.std, batch_size=50)
    expected_acc = float((data.val.labels == 2).float().mean())
    assert result["accuracy"] == pytest.approx(expected_acc)
    assert result["error"] == pytest.approx(1 - result["accuracy"])
    # cross-entropy of logits [5 at cls, 0 elsewhere]
    lse = math.log(math.exp(5) + 3)
    expected_loss = expected_acc * (lse - 5) + (1 - expected_acc) * lse
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    # batches of 50 over 120 examples, normalised exactly like DataBundle.normalize
    assert [len(x) for x in model.seen] == [50, 50, 20]
    assert torch.allclose(torch.cat(model.seen), data.normalize(data.val.images), atol=1e-6)


def test_evaluate_real_model_is_batch_independent_and_restores_mode(data):
    torch.manual_seed(0)
    model = build_model("lenet5", num_classes=4, input_size=16).train()
    a = evaluate(model, data.val, data.mean, data.std)
    b = evaluate(model, data.val, data.mean, data.std, batch_size=7)
    assert 0.0 <= a["accuracy"] <= 1.0
    assert a["error"] == pytest.approx(1 - a["accuracy"])
    assert a["accuracy"] == b["accuracy"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert all(m.training for m in model.modules())


def test_evaluate_rejects_empty_split(data):
    with pytest.raises(DataError, match="empty"):
        evaluate(ConstantClass(4, 0), data.val.subset(torch.tensor([], dtype=torch.long)), data.mean, data.std)


def test_normalize_without_stats_only_scales():
    images = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    assert torch.equal(normalize(images, None, None), torch.tensor([[[[0.0, 1.0]]]]))


def test_measure_model_uses_design_key_names(data):
    model = build_model("lenet5", num_classes=4, input_size=16)
    record = measure_model(model, None, data, split="val", repeats=3, warmup=1)
    assert {"params", "nonzero", "macs", "bytes", "latency_ms_b1", "latency_ms_b64", "val_error"} <= set(record)
    assert "test_error" not in record
    assert record["val_error"] == pytest.approx(evaluate(model, data.val, data.mean, data.std)["error"])
    assert record["params"] == record["nonzero"] > 0
    assert record["latency_ms_b64"] > 0 and record["extra"]["threads"] >= 1
    both = measure_model(model, (1, 16, 16), data, split=("val", "test"), latency=False)
    assert "latency_ms_b1" not in both and "extra" not in both
    assert both["test_error"] == pytest.approx(evaluate(model, data.test, data.mean, data.std)["error"])
    assert measure_model(model, (1, 16, 16))["macs"] == record["macs"]
    with pytest.raises(ConfigError, match="split"):
        measure_model(model, (1, 16, 16), data, split="train")
    with pytest.raises(ConfigError, match="input_shape"):
        measure_model(model, None)


def test_cli_measure_prints_table_and_json(tmp_path, capsys):
    from netrazor.cli import main

    model = build_model("lenet5", num_classes=4, input_size=16)
    save_model(model, tmp_path / "m")
    assert main(["measure", str(tmp_path / "m.json"), "--data", "synthetic", "--repeats", "3", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    for label in ("parameters", "MACs", "bytes", "latency batch 64", "val accuracy", "test accuracy", "53,074"):
        assert label in out
    assert main(["measure", str(tmp_path / "m"), "--no-latency", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["params"] == 53_074 and record["macs"] == measure_model(model, (1, 16, 16), latency=False)["macs"]


def test_cli_measure_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    from netrazor.cli import main

    assert main(["measure", str(tmp_path / "nothing")]) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long paths
    assert "nothing.json does not exist" in err


def test_cli_measure_reads_surgery_altered_models(tmp_path, capsys):
    from netrazor import surgery
    from netrazor.cli import main

    model = build_model("lenet5", num_classes=4, input_size=16)
    # A narrower hidden layer than the zoo spec says: the plain zoo loader must not be used.
    model.fc1, model.fc2 = nn.Linear(50, 30), nn.Linear(30, 4)
    surgery.save_model(model, tmp_path / "narrow")
    assert main(["measure", str(tmp_path / "narrow"), "--no-latency", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["params"] == sum(p.numel() for p in model.parameters())


def test_model_and_data_that_do_not_fit_give_a_model_error_not_torch_soup():
    from netrazor.data import make_synthetic
    from netrazor.errors import ModelError
    from netrazor.measure import evaluate, measure_model
    from netrazor.models import build_model

    data = make_synthetic(shape=(3, 28, 28), num_classes=4)
    one_channel = build_model("lenet5", num_classes=4, in_channels=1)
    with pytest.raises(ModelError, match="cannot run on inputs of shape"):
        measure_model(one_channel, data.input_shape, data=data, latency=False)
    two_classes = build_model("lenet5", num_classes=2, in_channels=3)
    with pytest.raises(ModelError, match="another number of classes"):
        evaluate(two_classes, data.val, data.mean, data.std)
