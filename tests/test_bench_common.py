"""benchmarks.common.subset: fixed random draws of train / val / test, and the EBCLE bench using it."""

from __future__ import annotations

import dataclasses

import torch

from benchmarks import ebcle_bench
from benchmarks.common import subset
from netrazor.data import make_synthetic


def _class_sorted_bundle():
    # Test split stored class by class, as in the CIFAR-10 archive: a prefix would hold one class.
    data = make_synthetic(n_train=600, n_val=200, n_test=400, num_classes=4, shape=(1, 8, 8), seed=3)
    order = torch.argsort(data.test.labels, stable=True)
    return dataclasses.replace(data, test=data.test.subset(order))


def _same(a, b) -> bool:
    return torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_test_subset_is_a_seeded_random_draw_not_a_prefix():
    data = _class_sorted_bundle()
    assert set(data.test.labels[:100].tolist()) == {0}
    small = subset(data, None, None, seed=0, n_test=100)
    assert len(small.test) == 100
    counts = torch.bincount(small.test.labels, minlength=4)
    assert (counts >= 10).all(), counts  # every class present (a prefix gives [100, 0, 0, 0])
    assert _same(subset(data, None, None, seed=0, n_test=100).test, small.test)  # seeded
    assert not _same(subset(data, None, None, seed=5, n_test=100).test, small.test)
    assert _same(small.train, data.train) and _same(small.val, data.val)  # other splits untouched


def test_test_split_is_whole_by_default_and_draws_do_not_depend_on_each_other():
    data = _class_sorted_bundle()
    a = subset(data, 300, 50, seed=0)
    assert a.test is data.test
    b = subset(data, 300, 50, seed=0, n_test=80)
    assert _same(a.train, b.train) and _same(a.val, b.val) and len(b.test) == 80
    for n in (0, None, 400, 10_000):  # 0 / None / too large: the whole split
        assert subset(data, n, n, seed=0, n_test=n).test is data.test


def test_ebcle_bench_draws_the_same_subsets_as_before(monkeypatch):
    data = _class_sorted_bundle()
    monkeypatch.setattr(ebcle_bench, "load_data", lambda name, seed=0: data)
    args = ebcle_bench.parse_args(["--data", "cifar10", "--train-size", "300", "--val-size", "50", "--test-size", "120"])
    got = ebcle_bench.prepare_data(args)

    # The draws ebcle_bench made with its own code (generators 0, 1, 2) before it used common.subset:
    # records written then and now compare on the same images.
    def old(images, n, seed):
        return images.subset(torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n])

    assert _same(got.train, old(data.train, 300, 0))
    assert _same(got.val, old(data.val, 50, 1))
    assert _same(got.test, old(data.test, 120, 2))
    quick = ebcle_bench.prepare_data(ebcle_bench.parse_args(["--quick", "--val-size", "0"]))
    assert quick.train is data.train and quick.val is data.val and quick.test is data.test  # all smaller than quick sizes


def test_dense_cache_is_reused_for_the_same_recipe_and_retrained_for_another(tmp_path, monkeypatch):
    from benchmarks import common
    from netrazor.train import TrainConfig

    trained = []
    real_train = common.Adapter.train

    def counting_train(self, model, *a, **kw):
        trained.append(self.train_config.label_smoothing)
        return real_train(self, model, *a, **kw)

    monkeypatch.setattr(common.Adapter, "train", counting_train)
    data = make_synthetic(n_train=64, n_val=32, n_test=32, num_classes=10, shape=(1, 28, 28), seed=0)
    config = TrainConfig(epochs=1, batch_size=32, lr=0.01, seed=0)
    first, _ = common.dense_model("lenet300", data, config, tag="t", cache=tmp_path)
    again, _ = common.dense_model("lenet300", data, config, tag="t", cache=tmp_path)
    assert trained == [0.0]  # the second call loaded the cache
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    common.dense_model("lenet300", data, dataclasses.replace(config, label_smoothing=0.1), tag="t", cache=tmp_path)
    assert trained == [0.0, 0.1]  # same tag, other recipe: retrained, not reused
