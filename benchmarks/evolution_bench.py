"""Benchmark: directed evolution (DE) vs global magnitude pruning, and DE's candidate throughput.

    python -m benchmarks.evolution_bench --model lenet5 --data mnist --seed 0 \
        [--sparsities 0.5,0.8,0.9,0.95,0.98] [--cycles 4] [--finetune-epochs 1] [--quick]
    python -m benchmarks.evolution_bench --model lenet5 --data mnist --throughput

Curve mode: trains (or loads from ``runs/bench-dense/``) the dense model with the documented recipe,
then for every sparsity runs DE (global target split by the "magnitude" rule, ``--cycles`` cycles,
``--finetune-epochs`` distillation epochs after each) and global magnitude pruning (one shot, then
the SAME total number of fine-tuning epochs, cycles × finetune-epochs, same learning rate, through
the same training loop). DE fine-tunes with ``--alpha`` (default 0.5) · KD + (1 − alpha) · CE;
magnitude with CE (``--magnitude-distill``: the same KD loss). ``--finetune-schedule continued``: DE's
cycles fine-tune on slices of one schedule (the baseline's learning rates and example order);
``--skip-magnitude``: DE only (side checks). Writes ``benchmarks/results/<task>/evolution-seed<N>.json`` and
``magnitude-seed<N>.json`` (DESIGN.md keys for the highest sparsity, ``extra.curve`` for all), plus
PNG plots. Validation decides nothing here; test errors are reported, never used for selection.

Throughput mode: candidates evaluated per second of every evaluator (``delta`` — the default —,
``delta-native-pool``, ``delta-unshared``, ``vectorised``) vs one forward per candidate, all timed in this one process
on the same candidates, ratios paired per repeat (``evolution-throughput.json``; ``--repeats``).

``--quick``: 10 000 training / 2 000 validation images, 3 dense epochs, a smaller search
(population 16, 3 generations, 10 % steps, evaluation batch 128); files get a ``-quick`` suffix so
they never pass for full runs.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import time
from pathlib import Path

from benchmarks.common import dense_model as shared_dense_model, subset
from netrazor.data import load_data
from netrazor.measure import count_nonzero, count_params, evaluate
from netrazor.methods.base import Adapter
from netrazor.methods.baselines import global_magnitude_prune
from netrazor.methods.evolution import EvolutionMethod, measure_throughput, plot_divergence_vs_density
from netrazor.methods.masks import prunable_layers
from netrazor.pipeline.records import make_record, write_record
from netrazor.train import default_config

log = logging.getLogger("evolution_bench")

DATA_TAG = {"mnist": "mnist", "fashion-mnist": "fmnist"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["lenet300", "lenet5"], default="lenet5")
    p.add_argument("--data", choices=sorted(DATA_TAG), default="mnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sparsities", default="0.5,0.8,0.9,0.95,0.98")
    p.add_argument("--cycles", type=int, default=4)
    p.add_argument("--finetune-epochs", type=int, default=1, help="DE: per cycle; magnitude: cycles x this, in total")
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--alpha", type=float, default=0.5,
                   help="DE fine-tune: alpha*KD + (1-alpha)*CE (1 = pure distillation)")
    p.add_argument("--finetune-schedule", choices=["restart", "continued"], default="restart",
                   help="DE: each cycle's fine-tune on a schedule of its own, or slices of one schedule of "
                        "cycles x finetune-epochs epochs (the magnitude baseline's learning rates and example order)")
    p.add_argument("--skip-magnitude", action="store_true",
                   help="side checks of DE knobs: run DE only and write no magnitude record")
    p.add_argument("--magnitude-distill", action="store_true", help="fine-tune magnitude with the same KD loss")
    p.add_argument("--dense-epochs", type=int, default=None)
    p.add_argument("--population", type=int, default=None)
    p.add_argument("--generations", type=int, default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--throughput", action="store_true", help="measure candidate throughput only")
    p.add_argument("--candidates", type=int, default=128, help="throughput: candidates per layer (one DE step)")
    p.add_argument("--repeats", type=int, default=None, help="throughput: repeats (default 3, quick 2)")
    p.add_argument("--in-run", action="store_true",
                   help="throughput: also run DE's search (no fine-tuning) to the highest sparsity with the "
                        "looped and the delta evaluator and compare candidates/s and masks")
    p.add_argument("--results", default="benchmarks/results")
    p.add_argument("--cache", default="runs/bench-dense")
    return p.parse_args(argv)


def prepare(args):
    data = load_data(args.data, seed=0)
    config = default_config(args.model, args.data)
    epochs = args.dense_epochs or (3 if args.quick else config.epochs)
    if args.quick:
        data = subset(data, 10000, 2000, args.seed)
    config = dataclasses.replace(config, epochs=epochs, seed=args.seed)
    return data, config


def dense_model(args, data, config):
    tag = f"evolution-{args.model}-{args.data}-e{config.epochs}-seed{args.seed}{'-quick' if args.quick else ''}"
    model, seconds = shared_dense_model(args.model, data, config, tag=tag, cache=Path(args.cache))
    return model, Adapter(data=data, train_config=config), seconds


def errors(model, data) -> dict:
    return {f"{s}_error": evaluate(model, getattr(data, s), data.mean, data.std)["error"] for s in ("val", "test")}


def search_knobs(args) -> dict:
    knobs = dict(population=32, elite=8, generations=5, candidate_size=0.05, eval_size=256)
    if args.quick:
        knobs.update(population=16, elite=4, generations=3, candidate_size=0.1, eval_size=128)
    if args.population:
        knobs["population"] = args.population
        knobs["elite"] = max(1, args.population // 4)
    if args.generations:
        knobs["generations"] = args.generations
    return knobs


def run_throughput(args, model, adapter, task) -> Path:
    knobs = search_knobs(args)
    sparsity = max(float(v) for v in args.sparsities.split(","))
    method = EvolutionMethod(targets=1.0 - sparsity, cycles=args.cycles, seed=args.seed, **knobs)
    x = method.eval_batch(adapter.data)[0]
    repeats = args.repeats or (2 if args.quick else 3)
    # run_mix: weighted by the steps per layer of the curve's DE run at its highest sparsity
    res = measure_throughput(model, x, candidates=args.candidates, repeats=repeats, seed=args.seed,
                             fraction=knobs["candidate_size"], mix=method.schedule_steps(model))
    res["run_mix_sparsity"] = sparsity
    if args.in_run:
        res["in_run"] = in_run_throughput(model, adapter, dict(targets=1.0 - sparsity, cycles=args.cycles,
                                                               seed=args.seed, **knobs))
    record = make_record(task, "evolution", args.seed, args.model, args.data,
                         extra={"throughput": res, "quick": args.quick})
    path = write_record(record, args.results, name=f"evolution-throughput{'-quick' if args.quick else ''}")
    for name, r in [*res["layers"].items(), ("overall", res["overall"])]:
        log.info("%s: looped %.1f/s; %s", name, r["looped_per_s"], "; ".join(
            f"{e} {v['per_s']:.1f}/s {v['ratio']:.2f}x" for e, v in r["evaluators"].items()))
    log.info("overall ratio (looped vs %s): %.2fx; run mix %s: %.2fx; in run: %s -> %s", res["default_evaluator"],
             res["overall"]["ratio"], res["run_mix"]["steps"], res["run_mix"]["ratio"],
             res.get("in_run", {}).get("ratio"), path)
    return path


def in_run_throughput(model, adapter, knobs: dict) -> dict:
    """Candidates/s of DE's own search (the step mix and the memo of a real run, no fine-tuning)
    with the looped reference and the delta evaluator, one after the other, and whether both
    runs chose the same masks (fitness values agree to float rounding, so they should)."""
    out, masks = {"knobs": {k: v for k, v in knobs.items()}}, {}
    for evaluator in ("looped", "delta"):
        method = EvolutionMethod(finetune_epochs=0, evaluator=evaluator, **knobs)
        student, rec = method.run(copy.deepcopy(model), adapter)
        masks[evaluator] = {n: m.weight != 0 for n, m in prunable_layers(student).items()}
        out[evaluator] = {k: rec[k] for k in ("candidates_evaluated", "search_seconds", "candidates_per_second",
                                             "overall_density")}
        log.info("in-run %s: %d candidates in %.1f s (%.1f/s)", evaluator, rec["candidates_evaluated"],
                 rec["search_seconds"], rec["candidates_per_second"])
    out["ratio"] = out["delta"]["candidates_per_second"] / out["looped"]["candidates_per_second"]
    out["same_masks"] = all(bool((masks["looped"][n] == masks["delta"][n]).all()) for n in masks["looped"])
    return out


def run_curve(args, model, adapter, task, train_seconds) -> list[Path]:
    data = adapter.data
    sparsities = [float(s) for s in args.sparsities.split(",")]
    dense = errors(model, data)
    knobs = search_knobs(args)
    de_curve, mag_curve, de_records = [], [], []
    budget = args.cycles * args.finetune_epochs
    for s in sparsities:
        t0 = time.perf_counter()
        method = EvolutionMethod(targets=1.0 - s, cycles=args.cycles, finetune_epochs=args.finetune_epochs,
                                 finetune_lr=args.finetune_lr, alpha=args.alpha, finetune_schedule=args.finetune_schedule,
                                 seed=args.seed, **knobs)
        student, rec = method.run(copy.deepcopy(model), adapter)
        de_seconds = time.perf_counter() - t0
        point = {"sparsity": s, "density": rec["overall_density"], "nonzero": count_nonzero(student),
                 "compress_seconds": de_seconds, "finetune_epochs": rec["finetune_epochs_total"],
                 "candidates_evaluated": rec["candidates_evaluated"],
                 "candidates_per_second": rec["candidates_per_second"],
                 "divergence_eval_batch": rec["after"]["divergence"],
                 "layer_densities": {n: v["density"] for n, v in rec["layers"].items()}, **errors(student, data)}
        de_curve.append(point)
        de_records.append(rec)
        log.info("sparsity %.2f: DE val/test error %.4f/%.4f", s, point["val_error"], point["test_error"])
        if args.skip_magnitude:
            continue
        t0 = time.perf_counter()
        pruned, masks = global_magnitude_prune(copy.deepcopy(model), s, adapter=adapter, finetune_epochs=budget,
                                               distill=args.magnitude_distill, lr=args.finetune_lr)
        mag_curve.append({"sparsity": s, "density": sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()),
                          "nonzero": count_nonzero(pruned), "compress_seconds": time.perf_counter() - t0,
                          "finetune_epochs": budget,
                          "layer_densities": {n: float(m.float().mean()) for n, m in masks.items()}, **errors(pruned, data)})
        log.info("sparsity %.2f: DE val/test error %.4f/%.4f  magnitude %.4f/%.4f", s, point["val_error"],
                 point["test_error"], mag_curve[-1]["val_error"], mag_curve[-1]["test_error"])
    suffix = f"seed{args.seed}{'-quick' if args.quick else ''}"
    out_dir = Path(args.results) / task
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_divergence_vs_density(de_records[-1], out_dir / f"evolution-{suffix}-divergence.png",
                               title=f"DE {args.model} {args.data}, sparsity {sparsities[-1]}")
    if mag_curve:
        _plot_curves(de_curve, mag_curve, out_dir / f"evolution-vs-magnitude-{suffix}.png", task)
    paths = []
    common = dict(params=count_params(model), params_dense=count_params(model), test_error_dense=dense["test_error"],
                  train_seconds_dense=train_seconds)
    for name, curve, extra in (
        ("evolution", de_curve, {"knobs": de_records[-1]["knobs"], "cycles": args.cycles}),
        ("magnitude", mag_curve, {"distill": args.magnitude_distill, "one_shot": True}),
    ):
        if not curve:
            continue
        top = curve[-1]
        extra = {**extra, "curve": curve, "quick": args.quick, "val_error_dense": dense["val_error"],
                 "finetune_epochs_total": budget, "finetune_lr": args.finetune_lr, "nonzero": top["nonzero"],
                 "sparsity": top["sparsity"], "train_images": len(data.train), "val_images": len(data.val)}
        record = make_record(task, name, args.seed, args.model, args.data, test_error=top["test_error"],
                             val_error=top["val_error"], compress_seconds=sum(p["compress_seconds"] for p in curve),
                             extra=extra, **common)
        paths.append(write_record(record, args.results, name=f"{name}-{suffix}"))
    return paths


def _plot_curves(de_curve, mag_curve, path, task) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from netrazor.io import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, curve in (("directed evolution", de_curve), ("global magnitude", mag_curve)):
        ax.plot([p["density"] for p in curve], [100 * (1 - p["test_error"]) for p in curve], "-o", label=label)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = [p["density"] for p in de_curve]
    ax.set_xticks(ticks, [f"{100 * t:g} %" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("density (fraction of weights kept)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{task}: same fine-tuning epochs")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    task = f"{DATA_TAG[args.data]}-{args.model}"
    data, config = prepare(args)
    model, adapter, train_seconds = dense_model(args, data, config)
    if args.throughput:
        return run_throughput(args, model, adapter, task)
    return run_curve(args, model, adapter, task, train_seconds)


if __name__ == "__main__":
    main()
