"""Parsimonious learning with Bernoulli gates on MNIST, trained from scratch, vs plain training.

Both runs use the same recipe (``netrazor.train.default_config(model, data)`` with ``--epochs``)
and the same seed. The gated run prunes units / filters (and, for LeNet-300-100, input pixels)
during training and hands back a physically smaller plain network. Writes one JSON record
``benchmarks/results/mnist-<model>/gates-seed<N>.json`` (DESIGN.md keys; the architecture, θ
convergence and seconds per epoch in ``extra``) and the θ / width plots next to it.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.gates_bench --model lenet300 --epochs 30 --seed 0
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.gates_bench --model lenet5 --epochs 16 --seed 0

Robustness runs (seeds, ``--width-mult 2``: record ``gates-x2-seed<N>``) may pass ``--no-plain`` to
skip the plain training; the initial weights are drawn the same way, the record then has no dense
error or time (``extra.plain_trained`` false). A knob variant needs ``--tag`` so its records do not
overwrite the defaults' (session 4's width-invariant LeNet-300-100 setting, docs/methods/gates.md):

    ... --model lenet300 --epochs 60 --tag data-k0.1-e60 --set cost_reference=data --set kappa=0.1 --seed S [--width-mult 2]

``--augment shift`` trains both runs on randomly translated digits (up to 2 px; session 6).

Targets (issue 5): LeNet-5-Caffe <= 1.0 % test error with >= 97 % of the parameters removed;
LeNet-300-100 <= 1.8 % with >= 90 % removed.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import time
from pathlib import Path

import torch

from benchmarks.common import knob_arg
from netrazor.data import load_data
from netrazor.measure import count_macs, count_params, evaluate
from netrazor.methods.base import Adapter
from netrazor.methods.gates import GatesMethod
from netrazor.methods.gates.method import widths_of
from netrazor.models import build_model
from netrazor.pipeline.records import make_record, write_record
from netrazor.train import Trainer, default_config
from netrazor.train.config import AUGMENTS


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["lenet5", "lenet300"], default="lenet5")
    ap.add_argument("--data", choices=["mnist"], default="mnist")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's epochs")
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--set", action="append", default=[], type=knob_arg, help="GatesMethod knob KEY=VALUE")
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument("--tag", default="", help="extra name part of the record, e.g. 'dataref' for a knob variant")
    ap.add_argument("--augment", choices=list(AUGMENTS), default=None,
                    help="training augmentation of both runs (default: the data set's, 'none' for MNIST); "
                         "'shift' translates by up to 2 px")
    ap.add_argument("--no-plain", action="store_true",
                    help="skip the plain training (robustness runs: the record then has no dense error or time)")
    ap.add_argument("--distill", action="store_true",
                    help="the rounded net's fine-tuning distils the plain-trained model (knobs distill_alpha, default "
                         "0.5 here, and distill_temperature); needs the plain training, so not with --no-plain")
    args = ap.parse_args(argv)
    if args.distill and args.no_plain:
        ap.error("--distill uses the plain-trained model as the teacher: drop --no-plain")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    torch.manual_seed(args.seed)
    data = load_data(args.data, seed=0)
    config = default_config(args.model, args.data)
    config = dataclasses.replace(config, seed=args.seed, epochs=args.epochs or config.epochs,
                                 augment=args.augment or config.augment)
    build = dict(num_classes=data.num_classes, in_channels=data.in_channels, input_size=data.image_size,
                 width_mult=args.width_mult)
    task = f"{args.data}-{args.model}"
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    # plain training, same recipe and seed (the initial weights are drawn the same way without it)
    torch.manual_seed(args.seed)
    dense = build_model(args.model, **build)
    initial = copy.deepcopy(dense.state_dict())
    hist_dense, train_seconds_dense, test_dense = [], None, None
    if not args.no_plain:
        t0 = time.perf_counter()
        hist_dense = Trainer(dense, data, config).fit()
        train_seconds_dense = time.perf_counter() - t0
        dense.eval()
        test_dense = evaluate(dense, data.test, data.mean, data.std)["error"]

    # gated training from the same initial weights
    model = build_model(args.model, **build)
    model.load_state_dict(initial)
    knobs = dict(args.set)
    knobs.setdefault("inputs", args.model == "lenet300")
    knobs.setdefault("seed", args.seed)
    if args.distill:
        knobs.setdefault("distill_alpha", 0.5)
    method = GatesMethod(epochs=config.epochs, **knobs)
    # width x1 keeps the DESIGN.md name; other starting widths get their own file (robustness runs)
    name = "gates" + (f"-{args.tag}" if args.tag else "") + (f"-x{args.width_mult:g}" if args.width_mult != 1.0 else "")
    name += f"-seed{args.seed}"
    plots_dir = Path(args.results) / task / name
    adapter = Adapter(data=data, train_config=config, run_dir=plots_dir)
    t0 = time.perf_counter()
    model, rec = method.run(model, adapter, teacher=dense if args.distill else None)
    train_seconds = time.perf_counter() - t0

    record = make_record(
        task, "gates", args.seed, args.model, args.data,
        params=count_params(model), params_dense=count_params(dense),
        macs=count_macs(model, data.input_shape), macs_dense=count_macs(dense, data.input_shape),
        test_error=rec["test_error"], val_error=rec["val_error"], test_error_dense=test_dense,
        train_seconds=train_seconds, train_seconds_dense=train_seconds_dense,
        layers=sum(1 for m in model.modules() if isinstance(m, torch.nn.ReLU)),
        layers_dense=sum(1 for m in dense.modules() if isinstance(m, torch.nn.ReLU)),
        extra={
            "architecture": rec["widths_after"],
            "architecture_dense": widths_of(dense),
            "params_removed_fraction": 1.0 - count_params(model) / count_params(dense),
            "theta_converged_fraction": rec["converged_fraction"],  # before rounding
            "rounded_at_step": rec.get("rounded_at_step"),
            "steps_per_epoch": -(-len(data.train) // config.batch_size),
            "epoch_seconds": rec["epoch_seconds"],
            "epoch_seconds_dense": [row.get("seconds") for row in hist_dense] or None,
            "plain_trained": not args.no_plain,
            "widths_per_epoch": [row["widths"] for row in rec["gate_epochs"]],
            "val_error_per_epoch": [row.get("val_error") for row in rec["gate_epochs"]],
            "removals": len(rec["removals"]),
            "knobs": rec["knobs"],
            "width_mult": args.width_mult,
            "augment": config.augment or data.augment,
            "epochs": config.epochs,
            "plots": rec.get("plots", []),
            "run_started_at": started,
        },
    )
    path = write_record(record, args.results, name=name)
    logging.getLogger("gates_bench").info(
        "%s: params %d -> %d (%.1f %% removed), test error %.4f (dense %s), %s; record %s",
        task, record["params_dense"], record["params"], 100 * record["extra"]["params_removed_fraction"],
        record["test_error"], test_dense, rec["widths_after"], path)
    return path


if __name__ == "__main__":
    main()
