"""Side-by-side: netrazor against the tools a user would pick instead (issue 10), measured in one run.

Per task and seed, from the same cached dense model and with the same fine-tuning epochs:

- ``gates``                    netrazor's Bernoulli gates, fine-tuning the dense model (structured)
- ``torch-pruning-magnitude``  Torch-Pruning, L2 group importance, iterative, to the MACs of ``gates``
- ``torch-pruning-taylor``     Torch-Pruning, Taylor group importance, same
- ``magnitude``                ``torch.nn.utils.prune`` global L1, fine-tuned with its masks
- ``deep-compression``         global magnitude pruning + k-means + entropy coding (netrazor's quant/codec)
- ``gates+evolution+pack``     gates, then directed evolution against the gates model, per-layer bits, .nrz

Records go to ``benchmarks/results/<task>/<method>-seed<seed>.json``; ``python -m benchmarks.render``
builds the tables and Pareto plots. ``--quick`` uses a training subset and one epoch per step: a
smoke check that every contender runs, not a result.

Reduced schedules (documented, CPU): LeNets use the default recipes; VGG-11 runs at width 0.25 on
Fashion-MNIST; ResNet-20 on CIFAR-10 uses ``--dense-epochs`` (default 30) of the default recipe.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import time

import torch

from benchmarks.common import dense_model, measured_fields, subset
from benchmarks.contenders import torch_prune_global_magnitude, torch_pruning_run
from netrazor.data import load_data
from netrazor.methods.base import Adapter
from netrazor.pipeline.records import make_record, write_record
from netrazor.train import default_config

log = logging.getLogger("benchmarks.compare")

TASKS = {
    "mnist-lenet300": {"model": "lenet300", "data": "mnist", "width": 1.0, "sparsity": 0.95},
    "mnist-lenet5": {"model": "lenet5", "data": "mnist", "width": 1.0, "sparsity": 0.97},
    "fmnist-vgg11": {"model": "vgg11", "data": "fashion-mnist", "width": 0.25, "sparsity": 0.9},
    "cifar10-resnet20": {"model": "resnet20", "data": "cifar10", "width": 1.0, "sparsity": 0.8, "dense_epochs": 30},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="mnist-lenet300,mnist-lenet5,fmnist-vgg11,cifar10-resnet20")
    p.add_argument("--seeds", default="0")
    p.add_argument("--finetune-epochs", type=int, default=4, help="the same fine-tuning budget for every contender")
    p.add_argument("--dense-epochs", type=int, default=None)
    p.add_argument("--tolerance", type=float, default=0.002, help="bit search: allowed val accuracy drop")
    p.add_argument("--methods", default="gates,torch-pruning-magnitude,torch-pruning-taylor,magnitude,deep-compression,gates+evolution+pack")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--results", default="benchmarks/results")
    return p.parse_args(argv)


def quantise_and_pack(model, adapter, tolerance: float, path) -> tuple[torch.nn.Module, dict]:
    """Fewest k-means bits per layer within ``tolerance`` of val accuracy, then the .nrz file."""
    from netrazor import codec, quant

    baseline = adapter.evaluate(model, "val")["accuracy"]
    result = quant.search_bits(model, lambda m: baseline - adapter.evaluate(m, "val")["accuracy"],
                               tolerance=tolerance, method="kmeans")
    report = codec.pack(result.model, path, quantisation=result.to_dict())
    return codec.unpack(path), {"bits": result.bits, "encoded_bytes": report.encoded_bytes, "pack": report.summary_line()}


def run_task(name: str, seed: int, args) -> None:
    task = TASKS[name]
    data = load_data(task["data"])
    config = default_config(task["model"], task["data"])
    dense_epochs = args.dense_epochs or task.get("dense_epochs") or config.epochs
    if args.quick:
        data = subset(data, 6000, 1000, seed)
        dense_epochs = 1
    config = dataclasses.replace(config, epochs=dense_epochs, seed=seed)
    tag = f"compare-{name}-w{task['width']}-e{dense_epochs}-seed{seed}{'-quick' if args.quick else ''}"
    dense, dense_seconds = dense_model(task["model"], data, config, tag=tag, width_mult=task["width"])
    adapter = Adapter(data=data, train_config=config)
    epochs = 1 if args.quick else args.finetune_epochs
    dense_fields = measured_fields(dense, data, suffix="_dense")
    dense_fields["train_seconds_dense"] = dense_seconds
    wanted = args.methods.split(",")
    common = {"task": name, "seed": seed, "model": task["model"], "data": task["data"]}

    def record(method: str, model, seconds: float, **extra) -> dict:
        rec = make_record(method=method, **common, **dense_fields, **measured_fields(model, data),
                          compress_seconds=seconds, extra={"finetune_epochs": epochs, "quick": args.quick, **extra})
        path = write_record(rec, args.results, name=_record_name(method, seed, args.quick))
        log.info("%s: test error %.4f, MACs %s, bytes %s -> %s", method, rec.get("test_error"), rec.get("macs"), rec.get("bytes"), path)
        return rec

    record("dense", dense, 0.0)
    gates_model = None
    if any(m.startswith("gates") for m in wanted) or any(m.startswith("torch-pruning") for m in wanted):
        from netrazor.methods.gates import GatesMethod

        started = time.perf_counter()
        gates_model, gates_record = GatesMethod(epochs=epochs, seed=seed).run(copy.deepcopy(dense), adapter)
        gates_rec = record("gates", gates_model, time.perf_counter() - started)
        target_macs = gates_rec["macs"]
        for importance in ("magnitude", "taylor"):
            method = f"torch-pruning-{importance}"
            if method in wanted:
                started = time.perf_counter()
                model, rec = torch_pruning_run(dense, adapter, importance=importance, target_macs=target_macs, finetune_epochs=epochs)
                record(method, model, time.perf_counter() - started, target_macs=target_macs, steps=rec["steps"])
    if "magnitude" in wanted:
        started = time.perf_counter()
        model, _ = torch_prune_global_magnitude(dense, adapter, sparsity=task["sparsity"], finetune_epochs=epochs)
        record("magnitude", model, time.perf_counter() - started, sparsity=task["sparsity"])
    work = f"runs/compare/{name}-seed{seed}"
    if "deep-compression" in wanted:
        from netrazor.methods.baselines import global_magnitude_prune

        started = time.perf_counter()
        model, _ = global_magnitude_prune(copy.deepcopy(dense), task["sparsity"], adapter=adapter, finetune_epochs=epochs)
        packed, info = quantise_and_pack(model, adapter, args.tolerance, f"{work}/deep-compression.nrz")
        rec = record("deep-compression", packed, time.perf_counter() - started, sparsity=task["sparsity"], **info)
        _artifact_bytes(rec, info, args, seed)
    if "gates+evolution+pack" in wanted and gates_model is not None:
        from netrazor.methods.evolution import EvolutionMethod

        started = time.perf_counter()
        # The same number of non-zero weights as deep-compression keeps, spread over the smaller net.
        density = min(1.0, (1 - task["sparsity"]) * dense_fields["params_dense"] / gates_rec["params"])
        evolved, _ = EvolutionMethod(targets=density, cycles=2, finetune_epochs=max(1, epochs // 2), seed=seed).run(copy.deepcopy(gates_model), adapter)
        packed, info = quantise_and_pack(evolved, adapter, args.tolerance, f"{work}/gates+evolution.nrz")
        rec = record("gates+evolution+pack", packed, time.perf_counter() - started, density=density, **info)
        _artifact_bytes(rec, info, args, seed)


def _artifact_bytes(rec: dict, info: dict, args, seed: int) -> None:
    """``bytes`` of a packed result is the .nrz file, not the float32 size of the unpacked model."""
    rec["bytes"] = info["encoded_bytes"]
    write_record(rec, args.results, name=_record_name(rec["method"], seed, args.quick))


def _record_name(method: str, seed: int, quick: bool) -> str:
    """``compare-<method>-seed<N>``: this harness's configurations never overwrite a method's own benchmark."""
    return f"compare-{method}-seed{seed}{'-quick' if quick else ''}"


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in args.tasks.split(","):
            if args.quick and name == "cifar10-resnet20":
                continue  # ~2 min per epoch even on a subset's worth of steps: not a smoke check
            run_task(name, seed, args)


if __name__ == "__main__":
    main()
