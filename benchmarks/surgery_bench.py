"""ResNet-20: 50 % of channels removed, 3 blocks folded, and both — params, MACs, CPU latency.

Weights are random (He init, randomised BN statistics): structure decides params, MACs and
latency, not the weight values. Variants, each measured against the dense model in ONE run
(latencies as ratios, DESIGN.md):

- ``surgery-remove-channels``: every coupled channel group (Torch-Pruning DepGraph, via
  ``netrazor.surgery.remove_channels``) loses the 50 % of channels whose root filters have the
  smallest L1 norm (the criterion is only a stand-in: surgery is independent of it);
- ``layer-folding``: in ``layer1.0``, ``layer2.0`` and ``layer3.0`` both rectifiers (``branch.relu1``
  and the post-add ``relu``) are replaced by Identity, then ``fold_linear_sections`` folds what is
  linear (BN everywhere; conv∘conv where exact; the residual add where the branch is one conv);
- ``surgery-remove-channels+layer-folding``: both.
Latency: ``netrazor.measure.latency_ms`` medians; every model is timed in two interleaved passes
and the smaller median kept. One JSON record per variant under
``benchmarks/results/surgery-resnet20/``.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.surgery_bench [--seed 0]
"""

from __future__ import annotations

import argparse
import copy

import torch

BLOCKS = ("layer1.0", "layer2.0", "layer3.0")


def _randomize_bn(model, seed):
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


def _half_channels(model, x):
    from netrazor.surgery import prunable_groups

    plan = {}
    for g in prunable_groups(model, x):
        w = model.get_submodule(g.root).weight.detach()
        order = w.flatten(1).abs().sum(1).argsort()
        plan[g.root] = sorted(order[: g.size // 2].tolist())
    return plan


def _fold_blocks(model, x, repeats):
    from netrazor.surgery import fold_linear_sections, replace_activation

    lin = copy.deepcopy(model)
    for block in BLOCKS:
        replace_activation(lin, f"{block}.branch.relu1")
        replace_activation(lin, f"{block}.relu")
    folded, report = fold_linear_sections(lin, x, timing_repeats=repeats)
    return folded, report


def _summary(report):
    kinds = {}
    for f in report["folds"]:
        if f.get("kept", "folded") == "folded":
            kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
    return {
        "folds_by_kind": kinds,
        "kernel_choices": [{k: f[k] for k in ("from", "kernel", "kept", "timing") if k in f}
                           for f in report["folds"] if f["kind"] == "conv"],
        "refused": report["refused"],
        "max_rel_error": report["max_rel_error"],
        "layers_before": report["layers_before"],
        "layers_after": report["layers_after"],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    from netrazor.measure import count_macs, count_params, latency_ms
    from netrazor.models import build_model
    from netrazor.pipeline.records import make_record, write_record
    from netrazor.surgery import check_equivalence, remove_channels

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats-b1", type=int, default=30)
    ap.add_argument("--repeats-b64", type=int, default=8)
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    dense = _randomize_bn(build_model("resnet20"), args.seed).eval()
    shape = (3, 32, 32)
    x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(args.seed))

    plan = _half_channels(dense, x)
    pruned = remove_channels(dense, plan, x)  # checks itself against the zeroed original
    folded, fold_report = _fold_blocks(dense, x, repeats=5)
    both, both_report = _fold_blocks(pruned, x, repeats=5)
    bn_only, _ = __import__("netrazor.surgery", fromlist=["fold_linear_sections"]).fold_linear_sections(
        dense, x, time_kernels=False)
    check_equivalence(dense, bn_only, x)

    models = {"dense": dense, "pruned": pruned, "folded": folded, "both": both, "bn_folded_dense": bn_only}
    lat = {k: {"b1": float("inf"), "b64": float("inf")} for k in models}
    for _ in range(2):  # interleaved passes share the machine's noise
        for key, m in models.items():
            lat[key]["b1"] = min(lat[key]["b1"], latency_ms(m, shape, 1, repeats=args.repeats_b1)["median"])
            lat[key]["b64"] = min(lat[key]["b64"], latency_ms(m, shape, 64, repeats=args.repeats_b64, warmup=2)["median"])
    stats = {k: {"params": count_params(m), "macs": count_macs(m, shape)} for k, m in models.items()}

    def rectifiers(m):
        return sum(isinstance(mod, torch.nn.ReLU) for mod in m.modules())

    records = []
    variants = (
        ("surgery-remove-channels", "pruned", {"channels_removed_per_group": {k: len(v) for k, v in plan.items()}}),
        ("layer-folding", "folded", {"blocks_linearised": list(BLOCKS), **_summary(fold_report)}),
        ("surgery-remove-channels+layer-folding", "both", {"blocks_linearised": list(BLOCKS), **_summary(both_report)}),
    )
    for method, key, extra in variants:
        s, d = stats[key], stats["dense"]
        extra = {
            **extra,
            "weights": "random (He init, randomised BN statistics); structure-only benchmark",
            "torch_threads": torch.get_num_threads(),
            "ratios": {
                "params": s["params"] / d["params"], "macs": s["macs"] / d["macs"],
                "latency_b1": lat[key]["b1"] / lat["dense"]["b1"], "latency_b64": lat[key]["b64"] / lat["dense"]["b64"],
            },
            "bn_folded_dense": {**stats["bn_folded_dense"], "latency_ms_b1": lat["bn_folded_dense"]["b1"],
                                "latency_ms_b64": lat["bn_folded_dense"]["b64"]},
            "repeats": {"b1": args.repeats_b1, "b64": args.repeats_b64, "passes": 2},
        }
        record = make_record(
            "surgery-resnet20", method, args.seed, "resnet20", "none (random input, 3x32x32)",
            params=s["params"], params_dense=d["params"], macs=s["macs"], macs_dense=d["macs"],
            latency_ms_b1=lat[key]["b1"], latency_ms_b1_dense=lat["dense"]["b1"],
            latency_ms_b64=lat[key]["b64"], latency_ms_b64_dense=lat["dense"]["b64"],
            layers=rectifiers(models[key]), layers_dense=rectifiers(dense), extra=extra,
        )
        path = write_record(record, args.results)
        records.append(record)
        r = extra["ratios"]
        print(f"{method:40} params {r['params']:.3f}  MACs {r['macs']:.3f}  latency b1 {r['latency_b1']:.3f}  "
              f"b64 {r['latency_b64']:.3f}  rectifiers {record['layers']}/{record['layers_dense']}  -> {path}")
    return records


if __name__ == "__main__":
    main()
