"""nepenthe_bench: tagged variants get their own record names but share the dense model's cache."""

from __future__ import annotations

from benchmarks import nepenthe_bench

TASK = ("--task", "cifar10-resnet20", "--seed", "0")


def _args(method, *extra):
    return nepenthe_bench.parse_args([*TASK, "--method", method, *extra])


def test_tag_separates_record_names_from_the_untagged_runs():
    names = {nepenthe_bench.record_method(_args(m, *tag))
             for m in ("easier", "layer-folding", "nepenthe") for tag in ((), ("--tag=-e20",))}
    assert names == {"easier", "layer-folding", "nepenthe", "easier-e20", "layer-folding-e20", "nepenthe-e20"}


def test_dense_cache_is_shared_across_methods_and_tags_but_not_schedules():
    tags = {nepenthe_bench.dense_tag(_args(m, *tag), 1.0, 20)
            for m in ("easier", "layer-folding", "nepenthe") for tag in ((), ("--tag=-e20",))}
    assert tags == {"cifar10-resnet20-w1.0-e20-seed0"}
    assert nepenthe_bench.dense_tag(_args("easier"), 1.0, 60) != tags.pop()
    assert nepenthe_bench.dense_tag(_args("easier", "--quick"), 0.25, 3).endswith("-quick")
