"""Benchmark: layer gates remove whole residual sections of a trained ResNet-20 (CIFAR-10).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.layer_gates_bench --seed 0 [--quick]

Issue 5's layer-gate target: "a ResNet-20 on CIFAR-10 (short documented schedule) loses at least
3 of its 9 residual sections with an accuracy drop under 1 point against the same schedule
without gates". The short documented schedule (CPU-bound: one shared core):

  start   the cached dense ResNet-20 (``runs/bench-dense/cifar10-resnet20-w1.0-e<dense>-seed<N>``,
          the resnet20/cifar10 recipe for ``--dense-epochs`` = 60 epochs; trained if missing);
  gated   ``--epochs`` (2) fine-tuning epochs on the 45k training images with one Bernoulli gate
          per residual section (``GatesMethod(layers=True, units=False, filters=False)``: exact
          flip-difference θ gradients, ``--flip-per-step`` sections a step), θ rounded after
          ``--gate-share`` (50 %) of the steps, then the plain shallower net fine-tunes to the end;
  control the same epochs, lr schedule and seed without gates (plain fine-tuning of the same
          dense model): the accuracy reference of the target;
  both    SGD (the recipe's momentum, Nesterov, weight decay, batch 128, crop+flip), cosine from
          ``--lr`` (0.02 = 0.2 x the recipe's lr, as nepenthe_bench retrains) to 0, no warm-up, no
          label smoothing (the dense model was trained without).

Then the gated model is finalised (removed branches are ``ZeroBranch``; a ReLU left with a
non-negative input becomes ``nn.Identity``), and params, MACs, rectifiers ("layers", counted as
the ResNet-20 NEPENTHE / EASIER records count them) and the latency at batch 1 and 64 (timed
back to back with the dense model, ``paired_latency``) are measured. The record
``benchmarks/results/cifar10-resnet20/layer-gates<tag>-seed<N>.json`` holds the DESIGN.md keys;
the control's errors, the sections kept/removed, the schedule and θ per section are in ``extra``.
Knobs (``--kappa``, ``--layer-vs-unit``, ``--flops-vs-params``) are chosen on validation only.
With filter gates off, ``layer_vs_unit`` ν only scales the layer gates' cost gradient (by 2ν):
the pressure on a section is 2νκ × its share of the expected cost.
Cost reference: the gates' default "log" cost prices a section by its share of the *current*
net, so each removal raises the price of the rest; a ResNet-20's 9 sections hold ~96 % of its MACs,
so that runaway ends at "remove them all" (κ = 1 and 2, 2 epochs, seed 0: all 9 went within 200
steps, val error 66 %). The linear "dense" reference prices every section at κ × its (fixed)
share of the dense net's cost: a section goes iff its loss increase is below that price.

``--quick``: width x0.25 (its cached 3-epoch dense model), 6000 / 2000 images: the pipeline end to
end in minutes, written to ``cifar10-resnet20-quick/``; its numbers are not the claim.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import time
from pathlib import Path

import torch

from benchmarks.common import dense_model, subset
from netrazor.data import load_data
from netrazor.measure import count_macs, count_params, latency_ms, model_bytes
from netrazor.methods.base import Adapter
from netrazor.methods.entropy_depth.entropy import find_rectifiers
from netrazor.methods.entropy_depth.measure import paired_latency
from netrazor.methods.gates import GatesMethod
from netrazor.pipeline.records import make_record, write_record
from netrazor.surgery import save_model
from netrazor.train import default_config

log = logging.getLogger("layer_gates_bench")

MODEL, DATA, TASK = "resnet20", "cifar10", "cifar10-resnet20"

# GatesMethod knobs of the recorded runs: the defaults of the flags below, and the ResNet-20 gates of
# benchmarks/compare.py (one setting, so the two benchmarks cannot drift apart).
LAYER_GATES = {"units": False, "filters": False, "layers": True, "kappa": 1.0, "layer_vs_unit": 0.5,
               "flops_vs_params": 1.0, "cost_reference": "dense", "flip_per_step": 3, "finetune": 0.5,
               "hyper_ramp": [0.1, 1.0], "hyper_strength": 1.5, "freeze_after": 0.8, "theta_lr": 0.02}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs, gated and control")
    p.add_argument("--dense-epochs", type=int, default=60, help="epochs of the cached dense model")
    p.add_argument("--lr", type=float, default=0.02, help="fine-tuning lr (cosine to 0, no warm-up)")
    p.add_argument("--kappa", type=float, nargs="+", default=[LAYER_GATES["kappa"]],
                   help="GatesMethod.kappa (accuracy vs size); several values: one gated run each, chosen on val")
    p.add_argument("--layer-vs-unit", type=float, default=LAYER_GATES["layer_vs_unit"], help="GatesMethod.layer_vs_unit")
    p.add_argument("--flops-vs-params", type=float, default=LAYER_GATES["flops_vs_params"],
                   help="GatesMethod.flops_vs_params (1: MACs only, what latency follows)")
    p.add_argument("--min-removed", type=int, default=3, help="sections a κ must remove to be chosen (issue 5: 3)")
    p.add_argument("--cost-reference", choices=("dense", "log", "data"), default=LAYER_GATES["cost_reference"],
                   help="GatesMethod.cost_reference; 'dense' (linear) here, see the module docstring")
    p.add_argument("--flip-per-step", type=int, default=LAYER_GATES["flip_per_step"], help="sections flip-estimated per step (unbiased)")
    p.add_argument("--theta-lr", type=float, default=LAYER_GATES["theta_lr"], help="Adam lr of θ (0.02: the gating phase is ~460 steps)")
    # pinned here (the values of the recorded runs), so the LeNet defaults of GatesMethod can move
    p.add_argument("--gate-share", type=float, default=1.0 - LAYER_GATES["finetune"], help="share of the steps before θ is rounded (1 - finetune)")
    p.add_argument("--hyper-ramp", type=float, nargs=2, default=LAYER_GATES["hyper_ramp"], help="GatesMethod.hyper_ramp")
    p.add_argument("--hyper-strength", type=float, default=LAYER_GATES["hyper_strength"], help="GatesMethod.hyper_strength")
    p.add_argument("--freeze-after", type=float, default=LAYER_GATES["freeze_after"],
                   help="GatesMethod.freeze_after (0.8: the kappa 1.5 record; the kappa 1 record ran with 0.5)")
    p.add_argument("--filters", action="store_true", help="gate the filters inside the sections too")
    p.add_argument("--control-record", default=None,
                   help="take the plain fine-tune from this record (same schedule and seed) instead of re-running it")
    p.add_argument("--no-control", action="store_true", help="skip the plain fine-tune (knob search on val)")
    p.add_argument("--train-images", type=int, default=None, help="random training subset (default: all 45k)")
    p.add_argument("--quick", action="store_true", help="tiny end-to-end run (see module docstring)")
    p.add_argument("--tag", default="", help="suffix of the method name; write --tag=-k2 (a leading - needs the =)")
    p.add_argument("--results", default="benchmarks/results")
    p.add_argument("--cache", default="runs/bench-dense")
    return p.parse_args(argv)


def prepare(args):
    """Data, width, the dense recipe (for the cache tag) and the fine-tuning schedule."""
    data = load_data(DATA, seed=0)
    width, dense_epochs = 1.0, args.dense_epochs
    if args.quick:
        width, dense_epochs = 0.25, 3
        data = subset(data, 6000, 2000, args.seed)
    elif args.train_images:
        data = subset(data, args.train_images, None, args.seed)
    recipe = default_config(MODEL, DATA)
    dense_config = dataclasses.replace(recipe, epochs=dense_epochs, seed=args.seed)
    # Pinned, not the recipe's: the dense model was trained without label smoothing, and a
    # fine-tune starts from a trained net (no warm-up).
    finetune = dataclasses.replace(recipe, epochs=args.epochs, lr=args.lr, warmup_epochs=0, label_smoothing=0.0,
                                   schedule="cosine", seed=args.seed)
    return data, width, dense_config, finetune


def rectifiers(model) -> list[str]:
    return [name for name, _ in find_rectifiers(model)]


def sections(model) -> list[str]:
    """Residual sections (modules with ``branch`` and ``shortcut``) and whether their branch is gone."""
    from netrazor.methods.gates import ZeroBranch

    return [name for name, m in model.named_modules()
            if hasattr(m, "branch") and hasattr(m, "shortcut") and not isinstance(m.branch, ZeroBranch)]


def choose(candidates: list, min_removed: int):
    """The κ run to record, on validation only: among the runs that removed >= ``min_removed``
    sections the lowest val error; if none did, the run that removed the most (then lowest val)."""
    def removed(c):
        return len(c[2]["removed_sections"])

    enough = [c for c in candidates if removed(c) >= min_removed]
    if enough:
        return min(enough, key=lambda c: c[2]["val_error"])
    return min(candidates, key=lambda c: (-removed(c), c[2]["val_error"]))


def reused_control(path: str, ft, train_images: int) -> dict:
    """The control fields of an earlier record, refused unless its fine-tune schedule is this one.

    The control does not depend on the gate knobs, so a κ variant need not pay for it again.
    """
    from netrazor.errors import ConfigError
    from netrazor.io import read_json

    rec = read_json(path)
    extra = rec.get("extra", {})
    schedule = extra.get("schedule", {})
    if schedule.get("finetune") != json_safe(dataclasses.asdict(ft)) or schedule.get("train_images") != train_images \
            or "val_error_control" not in extra:
        raise ConfigError(f"{path} has no control of this schedule (epochs, lr, seed, images); "
                          "run without --control-record to train the control here.")
    keys = ("val_error_control", "test_error_control", "train_seconds_control", "epoch_seconds_control",
            "val_error_per_epoch_control")
    return {**{k: extra[k] for k in keys if k in extra}, "control_from": str(path)}


def json_safe(obj):
    """What ``obj`` reads back as after a JSON round trip (tuples become lists)."""
    import json

    return json.loads(json.dumps(obj))


def main(argv=None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    data, width, dense_config, ft = prepare(args)
    tag = f"{TASK}-w{width}-e{dense_config.epochs}-seed{args.seed}{'-quick' if args.quick else ''}"
    dense, train_seconds_dense = dense_model(MODEL, data, dense_config, tag=tag, width_mult=width,
                                             cache=Path(args.cache))
    dense = dense.to(memory_format=torch.contiguous_format).eval()
    task = f"{TASK}-quick" if args.quick else TASK
    method_name = "layer-gates" + args.tag
    name = f"{method_name}-seed{args.seed}"
    adapter = Adapter(data=data, train_config=ft, run_dir=Path(args.results) / task / name)
    val_dense, test_dense = adapter.evaluate(dense, "val")["error"], adapter.evaluate(dense, "test")["error"]
    log.info("dense: val error %.4f, test error %.4f", val_dense, test_dense)

    # gated fine-tunes, one per κ; the record keeps the one chosen on validation
    candidates = []
    for kappa in args.kappa:
        knobs = dict(epochs=ft.epochs, units=False, filters=args.filters, layers=True, kappa=kappa,
                     layer_vs_unit=args.layer_vs_unit, flops_vs_params=args.flops_vs_params,
                     cost_reference=args.cost_reference, flip_per_step=args.flip_per_step,
                     finetune=1.0 - args.gate_share, hyper_ramp=tuple(args.hyper_ramp),
                     hyper_strength=args.hyper_strength, freeze_after=args.freeze_after,
                     theta_lr=args.theta_lr, seed=args.seed)
        torch.manual_seed(args.seed)
        started = time.perf_counter()
        # one plots folder per κ when several are tried
        run_dir = adapter.run_dir if len(args.kappa) == 1 else adapter.run_dir / f"kappa{kappa:g}"
        model, rec = GatesMethod(**knobs).run(copy.deepcopy(dense), Adapter(data=data, train_config=ft, run_dir=run_dir))
        seconds = time.perf_counter() - started
        log.info("gated (kappa %g): sections removed %s, val error %.4f (%.0f s)",
                 kappa, rec["removed_sections"], rec["val_error"], seconds)
        candidates.append((kappa, model.to(memory_format=torch.contiguous_format).eval(), rec, seconds))
    kappa, gated, rec, gated_seconds = choose(candidates, args.min_removed)

    # control: the same schedule without gates
    control_fields: dict = {}
    if args.control_record:
        control_fields = reused_control(args.control_record, ft, len(data.train))
    elif not args.no_control:
        control = copy.deepcopy(dense).train()
        torch.manual_seed(args.seed)
        started = time.perf_counter()
        hist = adapter.train(control)
        control.eval()
        control_fields = {
            "val_error_control": adapter.evaluate(control, "val")["error"],
            "test_error_control": adapter.evaluate(control, "test")["error"],
            "train_seconds_control": time.perf_counter() - started,
            "epoch_seconds_control": [row.get("seconds") for row in hist],
            "val_error_per_epoch_control": [None if row.get("val_acc") is None else 1 - row["val_acc"] for row in hist],
        }
        log.info("control: val error %.4f, test error %.4f", control_fields["val_error_control"],
                 control_fields["test_error_control"])

    shape = data.input_shape
    timed = paired_latency({"_dense": dense, "": gated}, shape)
    # On a loaded CPU a batch-1 pass that outlives its time slice is preempted, so the median of a
    # ~2 ms pass can jump by 10x while a shorter one does not; the 10th percentile of many
    # alternating runs is closer to the unloaded time (kept apart, in extra).
    p10 = {"dense": [], "gated": []}
    for _ in range(3):
        for key, m in (("dense", dense), ("gated", gated)):
            p10[key].append(latency_ms(m, shape, batch_size=1, repeats=100)["p10"])
    save_model(gated, Path(args.cache).parent / "layer-gates" / f"{task}-{name}")
    kept, dense_sections = sections(gated), sections(dense)
    rect, rect_dense = rectifiers(gated), rectifiers(dense)
    fields = dict(
        params=count_params(gated), params_dense=count_params(dense),
        macs=count_macs(gated, shape), macs_dense=count_macs(dense, shape),
        bytes=model_bytes(gated), bytes_dense=model_bytes(dense),
        val_error=rec["val_error"], test_error=rec["test_error"], test_error_dense=test_dense,
        layers=len(rect), layers_dense=len(rect_dense),
        train_seconds=gated_seconds, compress_seconds=gated_seconds, **timed,
    )
    if train_seconds_dense is not None:
        fields["train_seconds_dense"] = train_seconds_dense
    extra = {
        "sections_dense": len(dense_sections), "sections_kept": len(kept), "sections_kept_names": kept,
        "sections_removed": rec["removed_sections"], "idle_rectifiers": rec["idle_rectifiers"],
        "rectifiers_after": rect, "rectifiers_before": rect_dense,
        "val_error_dense": val_dense, **control_fields,
        "schedule": {"start": f"{args.cache}/{tag}", "finetune": dataclasses.asdict(ft),
                     "train_images": len(data.train), "val_images": len(data.val)},
        "knobs": rec["knobs"],
        # every κ tried in this run (selection on val only; see choose())
        "kappa_candidates": [{"kappa": k, "sections_removed": r["removed_sections"], "val_error": r["val_error"],
                              "train_seconds": sec} for k, _, r, sec in candidates],
        "theta_final": rec["theta_final"], "rounded_at_step": rec["rounded_at_step"],
        "removals": rec["removals"], "converged_fraction": rec["converged_fraction"],
        "epoch_seconds": rec["epoch_seconds"],
        "val_error_per_epoch": [row.get("val_error") for row in rec["gate_epochs"]],
        "plots": rec.get("plots", []), "quick": args.quick, "width_mult": width,
    }
    # issue 6's yardsticks on the same model (>= 30 % rectifiers, >= 25 % latency, <= 1 pt)
    extra["latency_ms_b1_p10"], extra["latency_ms_b1_p10_dense"] = min(p10["gated"]), min(p10["dense"])
    extra["latency_reduction_b1_p10"] = 1 - min(p10["gated"]) / min(p10["dense"])
    extra["model_saved"] = str(Path(args.cache).parent / "layer-gates" / f"{task}-{name}")
    extra["rectifiers_removed_fraction"] = 1 - len(rect) / len(rect_dense)
    extra["macs_removed_fraction"] = 1 - fields["macs"] / fields["macs_dense"]
    for b in ("b1", "b64"):
        extra[f"latency_reduction_{b}"] = 1 - timed[f"latency_ms_{b}"] / timed[f"latency_ms_{b}_dense"]
    record = make_record(task, method_name, args.seed, MODEL, DATA, extra=extra, **fields)
    path = write_record(record, args.results, name=name)
    drop = (rec["val_error"] - control_fields["val_error_control"]) if control_fields else float("nan")
    log.info("wrote %s: sections %d -> %d, rectifiers %d -> %d, MACs -%.1f %%, latency b1 -%.1f %% b64 -%.1f %%, "
             "val error %.4f (control %s, drop %.2f pt)", path, len(dense_sections), len(kept), len(rect_dense),
             len(rect), 100 * extra["macs_removed_fraction"], 100 * extra["latency_reduction_b1"],
             100 * extra["latency_reduction_b64"], rec["val_error"], control_fields.get("val_error_control"), 100 * drop)
    return path


if __name__ == "__main__":
    main()
