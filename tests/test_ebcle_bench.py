"""ebcle_bench: variant runs get their own record names; rounded shapes rebuild from their kwargs."""

from __future__ import annotations

from benchmarks import ebcle_bench
from netrazor.measure import count_params
from netrazor.methods.ebcle import shape
from netrazor.models import build_model


def test_record_tags_keep_the_default_names_and_separate_variants():
    tag = lambda *argv: ebcle_bench.record_tag(ebcle_bench.parse_args(list(argv)))
    assert tag() == ""  # keep=params records keep their committed names
    assert tag("--keep", "width") == "-width"
    assert tag("--keep", "flops", "--budget", "0.5") == "-flops-b0.5"
    assert tag("--round-to", "1,8") == "-r1-8"
    # a longer schedule never overwrites the 3-epoch, 10 000-image records
    assert tag("--epochs", "3", "--train-size", "10000") == ""
    assert tag("--keep", "flops", "--budget", "0.7", "--round-to", "16", "--epochs", "8", "--train-size", "15000") \
        == "-flops-b0.7-r16-e8-n15000"
    assert tag("--train-size", "0") == "-n0"


def test_shaped_kwargs_rebuild_the_rounded_model():
    kw = dict(in_channels=1, input_size=28)
    model, info = shape("resnet32", 22, round_to=8, **kw)
    rebuilt = build_model("resnet32", **kw, **ebcle_bench.shaped_kwargs(info))
    assert count_params(rebuilt) == count_params(model)
