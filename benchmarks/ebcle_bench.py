"""Benchmark of EBCLE: (a) the entropy bound vs the identity probe on a trained deep model, and
(b) the deep baseline vs the EBCLE-shaped (broader, shallower) model under the same recipe.

    python -m benchmarks.ebcle_bench --data mnist --deep resnet32 --seeds 0,1,2 --epochs 3 [--quick]
    python -m benchmarks.ebcle_bench --data cifar10 --deep resnet56 --seeds 0,1,2 --epochs 15 --train-size 0
    python -m benchmarks.ebcle_bench --fit mnist-resnet32,fashion-mnist-resnet32,cifar10-resnet32

Per seed: build and train the deep model (``default_config(deep, data)`` with ``--epochs`` and the
seed), time it, evaluate it (val and test), probe it on 512 validation images (fixed random draw, with labels for the lesion column); build
the EBCLE-shaped model (``shape(deep, bound, keep)``; same params by default), train it with the
same recipe, time it, evaluate it. After all seeds: Welch t-tests (scipy) on training seconds and
test error. Records (DESIGN.md keys) go to ``benchmarks/results/<data>-<deep>/dense-seed<N>.json``
and ``ebcle-seed<N>.json`` (``-quick`` appended to the file name for --quick runs, so they never
pass for full runs), the probe plot of each seed to ``ebcle-probe-seed<N>.png`` beside them; the trained deep
models to ``runs/ebcle-bench/`` (``netrazor depth-bound --probe`` re-probes them with other knobs).

Reduced schedules (2 shared CPU cores; docs/methods/ebcle.md):
  default     deep model resnet56 on CIFAR-10 (ResNet-32 is already within its bound), resnet32
              otherwise; ``--train-size`` training images (default 10 000, a fixed random subset drawn
              with generator seed 0; 0 = the whole split), ``--val-size`` validation
              images (default 2 000, a fixed random draw; per-epoch validation is part of the
              timed training) and the full test split, ``--epochs`` (default 3) epochs of the data set's recipe.
  --quick     resnet20 unless --deep is given, 6 000 training images, 2 epochs, 2 000 test
              images (fixed random draw): shows the pipeline end to end in minutes; its numbers are not the claim.
  --probe-only  part (a) only (calibration runs): no shaped model is trained.
  --fit T1,T2,…  no training: fit the default rule's constant k (least squares through the
              origin of the probe's conv depth on h*log2(side)) from the dense records of tasks T*,
              rows re-classified with --fit-criterion/--fit-threshold, depth --fit-measure; writes
              benchmarks/results/ebcle-calibration.json.
  --replot T1,T2,…  redraw the probe plots of tasks T* from their dense records.
  --paired-only  no training: time training steps of deep and shaped in alternation (median of
              per-round ratios; robust to the machine's load drift), ``<task>/ebcle-paired-steps.json``.
              Full runs record the same measurement in ``extra.welch.paired_steps``.
  --keep/--budget/--round-to  the shaping variant (shape()'s knobs; --round-to 1,8 with --paired-only
              times one shaped model per rounding against the deep model in the same rounds). Variants other
              than the default (keep params, budget 1, no rounding) tag their file names, e.g.
              ``ebcle-width-seed0.json``/``dense-width-seed0.json``, ``ebcle-paired-steps-r1-8.json``; a schedule
              other than 3 epochs on 10 000 images adds ``-e<epochs>``/``-n<train size>`` (``-n0``: all images).
Timings: one thread (``torch.set_num_threads(1)``), deep and shaped trained back to back within a
seed so that both see the same machine load; compare them as ratios, never as absolute numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import subset
from netrazor.data import load_data
from netrazor.data.entropy import dataset_entropy
from netrazor.measure import count_macs, count_params, evaluate
from netrazor.methods.base import Adapter
from netrazor.methods.ebcle import conv_depth, get_rule, identity_probe, plot_probe, probe_batch, shape
from netrazor.methods.ebcle.probe import summarise
from netrazor.methods.ebcle.rules import entropy_ratio, halvings
from netrazor.models import build_model
from netrazor.pipeline.records import make_record, write_record
from netrazor.surgery import save_model
from netrazor.train import default_config

log = logging.getLogger("ebcle_bench")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", choices=["mnist", "fashion-mnist", "cifar10"], default="mnist")
    p.add_argument("--deep", default=None,
                   help="deep baseline (default: resnet56 on cifar10 — ResNet-32 is within CIFAR-10's bound —, "
                        "resnet32 otherwise, resnet20 with --quick)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--train-size", type=int, default=None, help="training subset (0 = all)")
    p.add_argument("--test-size", type=int, default=None, help="N test images, fixed random draw (default all)")
    p.add_argument("--val-size", type=int, default=2000, help="N validation images, fixed random draw (0 = all 5 000)")
    p.add_argument("--keep", default="params", choices=["params", "flops", "width"])
    p.add_argument("--budget", type=float, default=1.0,
                   help="fraction of the kept params/MACs for the shaped model (shape(budget=); keep params/flops)")
    p.add_argument("--round-to", default=[1], type=_int_list,
                   help="channel multiple of the shaped model (shape(round_to=)); --paired-only takes a list, e.g. 1,8")
    p.add_argument("--rule", default="entropy-halvings")
    p.add_argument("--probe-images", type=int, default=512)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--probe-only", action="store_true")
    p.add_argument("--fit", default=None, help="comma-separated tasks whose dense records calibrate k")
    p.add_argument("--lesion-threshold", type=float, default=0.005, help="lesion criterion for plots/summaries")
    p.add_argument("--paired-only", action="store_true", help="only the alternating step-time ratio")
    p.add_argument("--paired-rounds", type=int, default=7)
    p.add_argument("--replot", default=None, help="comma-separated tasks: redraw probe plots from their dense records")
    p.add_argument("--fit-criterion", default="lesion", choices=["lesion", "residual", "cka"])
    p.add_argument("--fit-threshold", type=float, default=0.005)
    p.add_argument("--fit-out", default="ebcle-calibration.json", help="file name under --results for the fit")
    p.add_argument("--fit-measure", default="active", choices=["active", "effective"])
    p.add_argument("--results", default="benchmarks/results")
    p.add_argument("--cache", default="runs/ebcle-bench", help="where the trained deep models are saved")
    return p.parse_args(argv)


def prepare_data(args):
    """The data set with fixed random subsets (never prefixes: CIFAR-10's test split is stored class
    by class). Subset seed 0 for every run seed and both models, so all compare on the same images
    (the same draws as the records written before benchmarks.common.subset took over)."""
    train_size = args.train_size if args.train_size is not None else (6000 if args.quick else 10000)
    test_size = args.test_size if args.test_size is not None else (2000 if args.quick else 0)
    return subset(load_data(args.data, seed=0), train_size, args.val_size, seed=0, n_test=test_size)


def record_tag(args) -> str:
    """File-name tag of a shaping variant: "" for the default (keep=params, budget 1, no rounding),
    so the first records keep their names; e.g. "-width", "-flops-b0.5", "-r8". The renderer groups
    records by the file name without the seed, so each variant gets its own row and never
    overwrites another's records."""
    tag = "" if args.keep == "params" else f"-{args.keep}"
    if args.budget != 1.0:
        tag += f"-b{args.budget:g}"
    rounds = args.round_to
    if rounds != [1]:
        tag += "-r" + "-".join(str(r) for r in rounds)
    # A schedule other than the default (3 epochs on 10 000 images) is part of the name too, so a longer
    # run sits beside the short one's records instead of replacing them.
    if args.epochs is not None and args.epochs != 3 and not args.quick:
        tag += f"-e{args.epochs}"
    return tag + ("" if args.quick else images_tag(args))


def images_tag(args) -> str:
    """``-n<N>`` for a training subset other than the default 10 000 images (records and cached models)."""
    return "" if args.train_size in (None, 10000) else f"-n{args.train_size}"


def _int_list(text: str) -> list[int]:
    """``"1,8"`` -> ``[1, 8]`` (argparse type of --round-to)."""
    try:
        return [int(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers, e.g. 1,8") from None


def shaped_kwargs(info: dict) -> dict:
    """The build kwargs of the shaped model from ``shape()``'s info (explicit lists when rounded)."""
    return {k: info[k] for k in ("depth_mult", "width_mult", "blocks", "widths") if info.get(k) is not None}


def train_and_measure(model, data, config):
    adapter = Adapter(data=data, train_config=config)
    started = time.perf_counter()
    history = adapter.train(model)
    seconds = time.perf_counter() - started  # (the Trainer hands the model back contiguous)
    return {
        "train_seconds": seconds,
        "val_error": evaluate(model, data.val, data.mean, data.std)["error"],
        "test_error": evaluate(model, data.test, data.mean, data.std)["error"],
        "history": [{k: h[k] for k in ("epoch", "train_loss", "val_acc", "seconds") if k in h} for h in history],
    }


def paired_step_seconds(models: dict, data, config, rounds: int = 7, steps: int = 8) -> dict:
    """Seconds per training step (forward, backward, SGD step on a recipe-sized batch) of each
    model, measured in alternation (round r: model A then model B …) so that both see the same
    machine load; medians over rounds and the median of the per-round ratios. Wall-clock training
    times of whole runs drift with the load of a shared machine (±40 %); this ratio does not."""
    batch = config.batch_size
    x = data.normalize(data.train.images[:batch])
    y = data.train.labels[:batch]
    prepared = {}
    for name, model in models.items():
        model = model.train()
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        prepared[name] = (model, opt)
    xin = x.contiguous(memory_format=torch.channels_last) if config.channels_last else x
    times: dict[str, list[float]] = {name: [] for name in prepared}
    for r in range(rounds + 1):  # round 0 warms up
        for name, (model, opt) in prepared.items():
            started = time.perf_counter()
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(xin), y).backward()
                opt.step()
            if r:
                times[name].append((time.perf_counter() - started) / steps)
    names = list(times)
    out = {f"{n}_step_seconds": statistics.median(v) for n, v in times.items()}
    out.update({f"{n}_macs": count_macs(m, data.input_shape) for n, (m, _) in prepared.items()})
    reference = names[-1]
    for n in names[:-1]:  # each model against the last one (the deep model)
        ratio = statistics.median(a / b for a, b in zip(times[n], times[reference]))
        if len(names) == 2:
            out["step_time_ratio"], out["ratio_of"] = ratio, f"{n} / {reference}"
        else:
            out[f"{n}_step_time_ratio"] = ratio
    out.update(rounds=rounds, steps=steps, batch_size=batch, threads=torch.get_num_threads())
    return out


def welch(a, b) -> dict:
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return {"t": None, "p": None, "note": "needs >= 2 seeds per group"}
    res = stats.ttest_ind(a, b, equal_var=False)
    return {"t": float(res.statistic), "p": float(res.pvalue)}


def mean_std(v):
    return {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}


def default_deep(args) -> str:
    if args.deep:
        return args.deep
    if args.quick:
        return "resnet20"
    return "resnet56" if args.data == "cifar10" else "resnet32"


def run(args) -> list[Path]:
    deep = default_deep(args)
    epochs = args.epochs or (2 if args.quick else 3)
    data = prepare_data(args)
    task = f"{args.data}-{deep}"
    suffix = "-quick" if args.quick else ""
    tag = record_tag(args)
    stats = dataset_entropy(data)
    rule = get_rule(args.rule)
    bound = int(rule.max_depth(stats, tuple(data.image_size)))
    build_kw = dict(num_classes=data.num_classes, in_channels=data.in_channels, input_size=data.image_size)
    if len(args.round_to) != 1:
        raise SystemExit("--round-to takes one value for training runs (a list only with --paired-only)")
    _, info = shape(deep, bound, keep=args.keep, budget=args.budget, round_to=args.round_to[0], **build_kw)
    shape_kw = shaped_kwargs(info)
    if info["layers"] == info["layers_original"] and not args.probe_only:
        log.warning("%s (%d conv layers) is already within the bound %d: the shaped model is the deep model; "
                    "pass a deeper --deep (e.g. resnet56) for a meaningful comparison", deep, info["layers"], bound)
    log.info("%s: entropy %.3f bits, bound %d conv layers; %s %d -> %d layers (x%.3f width)", task, stats["mean"],
             bound, deep, info["layers_original"], info["layers"], info["width_mult"])
    common = dict(bound=bound, rule=args.rule, entropy_mean=stats["mean"], entropy_ratio=entropy_ratio(stats),
                  halvings=halvings(data.image_size), epochs=epochs, train_images=len(data.train),
                  val_images=len(data.val), test_images=len(data.test), quick=args.quick, keep=args.keep,
                  budget=args.budget, round_to=args.round_to[0])
    rows, paths = [], []
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        config = dataclasses.replace(default_config(deep, args.data), epochs=epochs, seed=seed)
        torch.manual_seed(seed)
        dense = build_model(deep, **build_kw)
        d = train_and_measure(dense, data, config)
        save_model(dense, Path(args.cache) / f"{task}-e{epochs}{images_tag(args)}-seed{seed}{suffix}")  # re-probe with other knobs later
        px, py = probe_batch(data, args.probe_images, with_labels=True)
        report = identity_probe(dense, px, labels=py)
        bound_blocks = sum(r["conv_depth"] <= bound for r in report.rows)
        by_lesion = summarise(report.rows, criterion="lesion", lesion_threshold=args.lesion_threshold)
        plot_probe(by_lesion, Path(args.results) / task / f"ebcle-probe{tag}-seed{seed}{suffix}.png",
                   bound_blocks=bound_blocks, title=f"{task} seed {seed}: probe (lesion criterion) vs EBCLE bound")
        probe = {"effective_depth": report.effective_depth, "effective_conv_layers": report.effective_conv_layers,
                 "active_blocks": report.active_blocks, "active_conv_layers": report.active_conv_layers,
                 "total_blocks": report.total_blocks, "bound_blocks": bound_blocks, "rows": report.rows,
                 "criterion": report.criterion, "residual_threshold": report.residual_threshold,
                 "cka_threshold": report.cka_threshold,
                 "lesion": {"threshold": args.lesion_threshold, "effective_depth": by_lesion.effective_depth,
                            "effective_conv_layers": by_lesion.effective_conv_layers,
                            "active_blocks": by_lesion.active_blocks,
                            "active_conv_layers": by_lesion.active_conv_layers}}
        shape_in = data.input_shape
        dense_rec = make_record(task, "dense", seed, deep, args.data, params=count_params(dense),
                                macs=count_macs(dense, shape_in), layers=conv_depth(dense),
                                train_seconds=d["train_seconds"], val_error=d["val_error"], test_error=d["test_error"],
                                extra=dict(common, probe=probe, history=d["history"]))
        paths.append(write_record(dense_rec, args.results, name=f"dense{tag}-seed{seed}{suffix}"))
        log.info("seed %d deep: %.1f s, test error %.4f, probe effective depth %d blocks (%d conv layers); lesion "
                 "criterion: %d active conv layers (bound %d)", seed, d["train_seconds"], d["test_error"],
                 report.effective_depth, report.effective_conv_layers, by_lesion.active_conv_layers, bound)
        row = {"seed": seed, "dense": d, "dense_rec": dense_rec, "probe": probe}
        if not args.probe_only:
            torch.manual_seed(seed)
            shaped = build_model(deep, **build_kw, **shape_kw)
            s = train_and_measure(shaped, data, config)
            row.update(shaped=s, shaped_model=shaped)
            log.info("seed %d shaped: %.1f s, test error %.4f", seed, s["train_seconds"], s["test_error"])
        rows.append(row)
    if args.probe_only:
        return paths
    paired = paired_step_seconds({"shaped": build_model(deep, **build_kw, **shape_kw),
                                  "dense": build_model(deep, **build_kw)}, data, config)
    t_shaped = [r["shaped"]["train_seconds"] for r in rows]
    t_dense = [r["dense"]["train_seconds"] for r in rows]
    e_shaped = [r["shaped"]["test_error"] for r in rows]
    e_dense = [r["dense"]["test_error"] for r in rows]
    summary = {
        "train_seconds": mean_std(t_shaped), "train_seconds_dense": mean_std(t_dense),
        "test_error": mean_std(e_shaped), "test_error_dense": mean_std(e_dense),
        "time_reduction": 1 - statistics.fmean(t_shaped) / statistics.fmean(t_dense),
        "welch_train_seconds": welch(t_shaped, t_dense), "welch_test_error": welch(e_shaped, e_dense),
        "paired_steps": paired,
    }
    p = summary["welch_test_error"].get("p")
    summary["accuracy_not_significantly_lower"] = not (
        summary["test_error"]["mean"] > summary["test_error_dense"]["mean"] and p is not None and p < 0.05)
    summary["target_met"] = summary["time_reduction"] >= 0.25 and summary["accuracy_not_significantly_lower"]
    log.info("%s: time reduction %.1f %%, test error %.4f±%.4f vs %.4f±%.4f (Welch p=%s)", task,
             100 * summary["time_reduction"], summary["test_error"]["mean"], summary["test_error"]["std"],
             summary["test_error_dense"]["mean"], summary["test_error_dense"]["std"], p)
    for r in rows:
        shaped = r["shaped_model"]
        rec = make_record(task, "ebcle", r["seed"], deep, args.data, params=count_params(shaped),
                          params_dense=r["dense_rec"]["params"], macs=count_macs(shaped, data.input_shape),
                          macs_dense=r["dense_rec"]["macs"], layers=conv_depth(shaped),
                          layers_dense=r["dense_rec"]["layers"], train_seconds=r["shaped"]["train_seconds"],
                          train_seconds_dense=r["dense"]["train_seconds"], val_error=r["shaped"]["val_error"],
                          test_error=r["shaped"]["test_error"], test_error_dense=r["dense"]["test_error"],
                          extra=dict(common, probe={k: v for k, v in r["probe"].items() if k != "rows"},
                                     shape=info, welch=summary, history=r["shaped"]["history"]))
        paths.append(write_record(rec, args.results, name=f"ebcle{tag}-seed{r['seed']}{suffix}"))
    return paths


def _rows_with_convs(rows: list[dict]) -> list[dict]:
    """Rows written before the probe recorded each block's own convs: derive them from the
    cumulative conv depth (the first block is assumed as deep as the second: exact for the zoo)."""
    rows = [dict(r) for r in rows]
    if rows and "convs" not in rows[0]:
        for i in range(len(rows) - 1, 0, -1):
            rows[i]["convs"] = rows[i]["conv_depth"] - rows[i - 1]["conv_depth"]
        rows[0]["convs"] = rows[1]["convs"] if len(rows) > 1 else rows[0]["conv_depth"]
    return rows


def fit(args) -> dict:
    """Fit k of the default rule, L = k * h * log2(side), by least squares through the origin on the
    probe's depth of the dense records of the given tasks. The probe rows are re-classified with
    ``--fit-criterion`` and its threshold (``summarise``); ``--fit-measure`` picks the depth:
    "active" = active_conv_layers (stem + convs of blocks that are not identity-like) or
    "effective" = effective_conv_layers (convs up to the last block that is not identity-like)."""
    from netrazor.io import write_json
    from netrazor.methods.ebcle.probe import summarise

    thresholds = {"lesion_threshold": args.fit_threshold} if args.fit_criterion == "lesion" else (
        {"residual_threshold": args.fit_threshold} if args.fit_criterion == "residual" else {"cka_threshold": args.fit_threshold})
    points = []
    for task in args.fit.split(","):
        for path in sorted((Path(args.results) / task).glob("dense-seed*.json")):
            if path.stem.endswith("-quick"):
                continue
            rec = json.loads(path.read_text())
            ex = rec["extra"]
            report = summarise(_rows_with_convs(ex["probe"]["rows"]), criterion=args.fit_criterion, **thresholds)
            y = report.active_conv_layers if args.fit_measure == "active" else report.effective_conv_layers
            points.append({"task": task, "file": str(path), "x": ex["entropy_ratio"] * ex["halvings"], "y": y,
                           "test_error": rec.get("test_error"), "layers": rec.get("layers"),
                           "active_blocks": report.active_blocks, "effective_depth": report.effective_depth,
                           "identity_like": [r["name"] for r in report.rows if r["identity_like"]]})
    if not points:
        raise SystemExit(f"no dense records under {args.results} for {args.fit}; run with --probe-only first.")
    k = sum(p["x"] * p["y"] for p in points) / sum(p["x"] ** 2 for p in points)
    for p in points:
        p["predicted"] = k * p["x"]
    out = {"k": k, "criterion": args.fit_criterion, "threshold": args.fit_threshold, "measure": args.fit_measure,
           "form": "L = k * (H/8) * log2(min side)", "points": points}
    out["command"] = " ".join(["python -m benchmarks.ebcle_bench", *argv_tail()])
    write_json(Path(args.results) / args.fit_out, out)
    print(json.dumps(out, indent=1))
    return out


def paired_only(args) -> dict:
    """Only the alternating step-time measurement of deep vs shaped (no training); writes
    ``<task>/ebcle-paired-steps.json`` (a side file, not a benchmark record)."""
    from netrazor.io import write_json

    deep = default_deep(args)
    data = prepare_data(args)
    bound = int(get_rule(args.rule).max_depth(dataset_entropy(data), tuple(data.image_size)))
    build_kw = dict(num_classes=data.num_classes, in_channels=data.in_channels, input_size=data.image_size)
    models, shapes = {}, {}
    for r in args.round_to:  # several roundings: one model each, all timed in the same rounds
        name = "shaped" if len(args.round_to) == 1 else f"shaped_r{r}"
        _, shapes[name] = shape(deep, bound, keep=args.keep, budget=args.budget, round_to=r, **build_kw)
        models[name] = build_model(deep, **build_kw, **shaped_kwargs(shapes[name]))
    models["dense"] = build_model(deep, **build_kw)
    config = default_config(deep, args.data)
    out = paired_step_seconds(models, data, config, rounds=args.paired_rounds)
    info = next(iter(shapes.values()))
    out.update(task=f"{args.data}-{deep}", bound=bound, layers=info["layers"], layers_dense=info["layers_original"],
               keep=args.keep, budget=args.budget, shapes=shapes,
               command=" ".join(["python -m benchmarks.ebcle_bench", *(argv_tail())]))
    write_json(Path(args.results) / out["task"] / f"ebcle-paired-steps{record_tag(args)}.json", out)
    log.info("%s: step time ratios vs dense %s", out["task"],
             {k: round(v, 3) for k, v in out.items() if k.endswith("step_time_ratio")})
    return out


def argv_tail() -> list[str]:
    import sys

    return sys.argv[1:]


def replot(args) -> list[Path]:
    """Redraw the probe plots of existing dense records (lesion criterion) without training."""
    out = []
    for task in args.replot.split(","):
        for path in sorted((Path(args.results) / task).glob("dense-seed*.json")):
            rec = json.loads(path.read_text())
            ex = rec["extra"]
            report = summarise(_rows_with_convs(ex["probe"]["rows"]), criterion="lesion",
                               lesion_threshold=args.lesion_threshold)
            bound_blocks = sum(r["conv_depth"] <= ex["bound"] for r in report.rows)
            png = path.with_name(path.stem.replace("dense-", "ebcle-probe-") + ".png")
            out.append(plot_probe(report, png, bound_blocks=bound_blocks,
                                  title=f"{task} seed {rec['seed']}: probe (lesion criterion) vs bound {ex['bound']}"))
    return out


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    args = parse_args(argv)
    if args.fit:
        return fit(args)
    if args.paired_only:
        return paired_only(args)
    if args.replot:
        return replot(args)
    return run(args)


if __name__ == "__main__":
    main()
