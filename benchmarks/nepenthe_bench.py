"""Benchmark: NEPENTHE vs EASIER vs Layer Folding on the same dense model and schedule.

    python -m benchmarks.nepenthe_bench --task fmnist-vgg11 --method nepenthe --seed 0 [--quick]

Trains (or loads from ``runs/bench-dense/``) the dense model with the task's documented schedule,
runs the method through ``netrazor.methods.entropy_depth``, measures everything with
``netrazor.measure`` in this one process, and writes
``benchmarks/results/<task>/<method>-seed<N>.json`` (DESIGN.md keys; ``--quick`` runs write to
``benchmarks/results/<task>-quick/`` so they never pass for full runs).

Schedules (reduced to fit a few CPU hours on 2 cores; docs/methods/nepenthe.md):
  fmnist-vgg11      VGG-11 (BN) width x0.25 on Fashion-MNIST (the fmnist-vgg11 recipe's model);
                    dense: the vgg11/fashion-mnist recipe for --epochs (default 10); methods: <= 10
                    rounds x 1 retraining epoch at 0.2 x the recipe's lr, delta 1 pt; entropy on
                    10 000 training images; EASIER folds padded pairs inside its rounds (the
                    round's epoch distils), the other methods after the rounds (--approx-epochs).
                    ~10-15 min per method at nice 10 on one shared core once the dense model is
                    cached (its 10 epochs: ~7 min).
  cifar10-resnet20  ResNet-20 on CIFAR-10; dense: the resnet20/cifar10 recipe for --epochs
                    (default 20); methods as above.
  layer-folding     trains rounds x retrain_epochs - 1 epochs with the penalty, then 1 fine-tune
                    epoch: the same epoch budget as the other two.
  --order, --approx-fold, --residual, --temperature, --zeta, --layer-cap, --backtrack: the methods' knobs; --tag names the record
                    <method><tag>-seed<N>.json so variants do not overwrite the default run.
  --quick           width x0.25, 6000 training / 2000 validation images, 3 dense epochs, 3 rounds:
                    shows the pipeline end to end in minutes; its numbers are not the claim.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
from pathlib import Path

from benchmarks.common import dense_model, subset
from netrazor.data import load_data
from netrazor.measure import model_bytes
from netrazor.methods.base import Adapter
from netrazor.methods.entropy_depth import METHODS
from netrazor.pipeline.records import make_record, write_record
from netrazor.train import default_config

log = logging.getLogger("nepenthe_bench")

TASKS = {
    "fmnist-vgg11": dict(model="vgg11", data="fashion-mnist", width=0.25, epochs=10),
    "cifar10-resnet20": dict(model="resnet20", data="cifar10", width=1.0, epochs=20),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--method", choices=sorted(METHODS), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="dense training epochs (default: the task's)")
    p.add_argument("--quick", action="store_true", help="tiny end-to-end run (see module docstring)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--retrain-epochs", type=int, default=1)
    p.add_argument("--delta", type=float, default=0.01, help="allowed validation accuracy drop (fraction)")
    p.add_argument("--entropy-samples", type=int, default=10000)
    p.add_argument("--retrain-lr-scale", type=float, default=0.2, help="retraining lr = this x the recipe's lr")
    p.add_argument("--order", choices=("entropy", "foldable-first"), default="foldable-first",
                   help="EASIER's choice of the next rectifier (DepthKnobs.order)")
    p.add_argument("--approx-fold", choices=("off", "lstsq", "centre"), default="lstsq",
                   help="approximate folding of linearised padded conv pairs (DepthKnobs.approx_fold)")
    p.add_argument("--approx-epochs", type=int, default=1)
    p.add_argument("--temperature", type=float, default=None, help="NEPENTHE's softmax temperature (default: the method's, 1 = EGP)")
    p.add_argument("--zeta", type=float, default=None, help="NEPENTHE's pruned fraction per round (default: the method's, 0.5)")
    p.add_argument("--layer-cap", type=float, default=None, help="NEPENTHE's largest fraction of a layer pruned per round (default: the method's, 1 = EGP)")
    p.add_argument("--backtrack", type=int, default=None, help="NEPENTHE's retries of a round below delta with zeta halved (default: the method's)")
    p.add_argument("--residual", choices=("linearise", "drop"), default=None,
                   help="EASIER on residual nets: linearise the chosen rectifier (default) or drop the residual branch "
                        "holding it (EasierMethod.residual)")
    p.add_argument("--tag", default="", help="suffix of the record's method name; write --tag=-T10 (a value starting with - needs the =)")
    p.add_argument("--results", default="benchmarks/results")
    p.add_argument("--cache", default="runs/bench-dense")
    return p.parse_args(argv)


def prepare(args):
    task = TASKS[args.task]
    data = load_data(task["data"], seed=0)
    width, epochs = task["width"], args.epochs or task["epochs"]
    if args.quick:
        width, epochs = 0.25, args.epochs or 3
        data = subset(data, 6000, 2000, args.seed)
    config = dataclasses.replace(default_config(task["model"], task["data"]), epochs=epochs, seed=args.seed)
    return task, data, width, config


def dense_tag(args, width: float, epochs: int) -> str:
    """The dense cache's name. It leaves out the method and --tag, so every method and variant of a
    task, width, schedule and seed starts from the same dense model."""
    return f"{args.task}-w{width}-e{epochs}-seed{args.seed}{'-quick' if args.quick else ''}"


def record_method(args) -> str:
    """The record's method name: ``<method><tag>`` (file ``<method><tag>-seed<N>.json``)."""
    return args.method + args.tag


def main(argv=None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    task, data, width, config = prepare(args)
    model, train_seconds = dense_model(task["model"], data, config, tag=dense_tag(args, width, config.epochs),
                                       width_mult=width, cache=Path(args.cache))
    adapter = Adapter(data=data, train_config=config)
    bytes_dense = model_bytes(model)
    knobs = dict(delta=args.delta, retrain_epochs=args.retrain_epochs, entropy_samples=args.entropy_samples,
                 retrain_lr=config.lr * args.retrain_lr_scale, order=args.order, approx_fold=args.approx_fold,
                 approx_epochs=args.approx_epochs)
    rounds = args.rounds or (3 if args.quick else 10)
    if args.method == "nepenthe":
        nep = (("temperature", args.temperature), ("zeta", args.zeta), ("layer_cap", args.layer_cap), ("backtrack", args.backtrack))
        knobs.update({k: v for k, v in nep if v is not None})
    elif any(v is not None for v in (args.temperature, args.zeta, args.layer_cap, args.backtrack)):
        raise SystemExit("--temperature/--zeta/--layer-cap/--backtrack are NEPENTHE's knobs")
    if args.residual is not None:
        if args.method != "easier":
            raise SystemExit("--residual is EASIER's knob")
        knobs["residual"] = args.residual
    if args.method == "layer-folding":
        knobs.update(train_epochs=max(1, rounds * args.retrain_epochs - 1), finetune_epochs=1)
    else:
        knobs["rounds"] = rounds
    method = METHODS[args.method](**knobs)
    out, rec = method.run(copy.deepcopy(model), adapter)
    fields = {k: rec[k] for k in ("params", "params_dense", "macs", "macs_dense", "latency_ms_b1", "latency_ms_b1_dense",
                                  "latency_ms_b64", "latency_ms_b64_dense", "test_error", "val_error",
                                  "test_error_dense", "layers", "layers_dense", "compress_seconds") if k in rec}
    extra = {k: v for k, v in rec.items() if k not in fields}
    extra.update(quick=args.quick, width_mult=width, dense_epochs=config.epochs,
                 train_images=len(data.train), val_images=len(data.val))
    if train_seconds is not None:
        fields["train_seconds_dense"] = train_seconds
    # Quick runs go to their own task folder (<task>-quick) so no table mistakes them for the claim.
    task_name = f"{args.task}-quick" if args.quick else args.task
    record = make_record(task_name, record_method(args), args.seed, task["model"], task["data"], bytes=model_bytes(out),
                         bytes_dense=bytes_dense, extra=extra, **fields)
    path = write_record(record, args.results)
    log.info("wrote %s: layers %s -> %s, val error %.4f -> %.4f, MACs %s -> %s, latency b1 %.3f -> %.3f ms",
             path, rec["layers_dense"], rec["layers"], rec["val_error_dense"], rec["val_error"], rec.get("macs_dense"),
             rec.get("macs"), rec.get("latency_ms_b1_dense", float("nan")), rec.get("latency_ms_b1", float("nan")))
    return path


if __name__ == "__main__":
    main()
