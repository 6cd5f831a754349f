"""Side-by-side: netrazor against the tools a user would pick instead (issue 10), measured in one run.

Per task and seed, from the same cached dense model and with the same fine-tuning epochs:

- ``gates``                    netrazor's Bernoulli gates, fine-tuning the dense model (structured)
- ``torch-pruning-magnitude``  Torch-Pruning, L2 group importance, iterative, to the MACs of ``gates``
- ``torch-pruning-taylor``     Torch-Pruning, Taylor group importance, same
- ``magnitude``                ``torch.nn.utils.prune`` global L1, fine-tuned with its masks
- ``deep-compression``         global magnitude pruning + k-means + entropy coding (netrazor's quant/codec)
- ``gates+evolution+pack``     gates, then directed evolution against the gates model, per-layer bits, .nrz

Equal MACs: both Torch-Pruning runs land within 2 % of gates' MACs (the issue allows ±5 %); the record's
``extra`` holds ``target_macs``, ``reached_macs`` and ``macs_off``. Latency: every record whose MACs fell
carries ``extra.latency_breakdown`` (per-layer CPU times and MACs next to the dense model's, batch 1 and
64) and ``extra.latency_reason`` (what that breakdown says), which the renderer prints where the latency
speed-up is under 0.7x the MAC cut.

Records go to ``benchmarks/results/<task>/compare-<method>-seed<seed>.json``; ``python -m benchmarks.render``
builds the tables and Pareto plots. ``--quick`` uses a training subset and one epoch per step: a
smoke check that every contender runs, not a result.

Bytes at equal test error (docs/compare.md): ``--sparsities S1,S2,..`` runs deep-compression and
gates+evolution+pack at each global sparsity (deep-compression then fine-tunes as many epochs as the whole
chain); ``--dc-budget recipe`` gives deep-compression the shipped recipe's epochs in all as prune-retrain
rounds, to set against the recipe's own records (``compress_bench``). The renderer interpolates each
deep-compression curve at netrazor's error. ``--recipe <variant>`` (e.g. ``mnist-lenet5-shift``) runs a task
under a recipe variant's training (its ``train:`` overrides, say shifted digits, for the dense model and every
contender) and budget; the records then go under the variant's name, next to its ``compress_bench`` records.

Reduced schedules (documented, CPU): LeNets use the default recipes; VGG-11 runs at width 0.25 on
Fashion-MNIST; ResNet-20 on CIFAR-10 uses ``--dense-epochs`` (default 20) of the default recipe, and its
contenders fine-tune at lr 0.02 (``--finetune-lr``), with gates removing whole residual sections
(``RESNET_LAYER_GATES``; ``--gates-set kappa=..`` moves the cut, ``--tag`` keeps each setting's records apart).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import time

import torch
from torch import nn

from benchmarks.common import dense_model, knob_arg, measured_fields, subset
from benchmarks.contenders import torch_prune_global_magnitude, torch_pruning_run
from benchmarks.layer_gates_bench import LAYER_GATES
from benchmarks.render import LATENCY_EFFICIENCY_FLOOR
from netrazor.data import load_data
from netrazor.measure import count_macs, count_params, macs_by_module
from netrazor.methods.base import Adapter
from netrazor.pipeline.recipe import load_recipe
from netrazor.pipeline.records import make_record, write_record
from netrazor.train import default_config

log = logging.getLogger("benchmarks.compare")

# ResNet-20: gates remove whole residual sections (the setting of benchmarks/layer_gates_bench.py). With
# GatesMethod's defaults (units and filters, log cost) in 2 epochs gates removed nothing and one gated epoch
# took ~25 min on this CPU (session 7); the layer gates cost ~6 min an epoch.
RESNET_LAYER_GATES = LAYER_GATES

TASKS = {
    "mnist-lenet300": {"model": "lenet300", "data": "mnist", "width": 1.0, "sparsity": 0.95},
    "mnist-lenet5": {"model": "lenet5", "data": "mnist", "width": 1.0, "sparsity": 0.97},
    "fmnist-vgg11": {"model": "vgg11", "data": "fashion-mnist", "width": 0.25, "sparsity": 0.9},
    "cifar10-resnet20": {"model": "resnet20", "data": "cifar10", "width": 1.0, "sparsity": 0.8, "dense_epochs": 20,
                         "finetune_lr": 0.02, "gates": RESNET_LAYER_GATES},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="mnist-lenet300,mnist-lenet5,fmnist-vgg11,cifar10-resnet20")
    p.add_argument("--seeds", default="0")
    p.add_argument("--finetune-epochs", type=int, default=4, help="the same fine-tuning budget for every contender")
    p.add_argument("--finetune-lr", type=float, default=None,
                   help="peak lr of every contender's fine-tuning (default: the task's, else the training recipe's; "
                        "ResNet-20 uses 0.02, 0.2x its recipe's: a fine-tune starts from a trained net)")
    p.add_argument("--gates-set", action="append", default=[], type=knob_arg, metavar="KEY=VALUE",
                   help="a GatesMethod knob for the gates contender (repeatable; over the task's own, e.g. kappa=1.5)")
    p.add_argument("--tag", default="", help="suffix of every record name of this run but the dense model's (write --tag=-k1.5), so "
                                             "a setting's records sit beside the default's")
    p.add_argument("--dense-epochs", type=int, default=None)
    p.add_argument("--tolerance", type=float, default=0.002, help="bit search: allowed val accuracy drop")
    p.add_argument("--methods", default="gates,torch-pruning-magnitude,torch-pruning-taylor,magnitude,deep-compression,gates+evolution+pack")
    p.add_argument("--sparsities", default=None,
                   help="bytes-vs-error sweep: comma list of global sparsities for deep-compression and "
                        "gates+evolution+pack (e.g. 0.97,0.98,0.99); records are named compare-<method>-s<S>-seed<N> "
                        "and deep-compression fine-tunes as many epochs as the whole chain does (default: the task's one sparsity)")
    p.add_argument("--dc-budget", choices=("finetune", "recipe"), default="finetune",
                   help="deep-compression's training budget: 'finetune' (--finetune-epochs, or the chain's epochs in a "
                        "sweep) or 'recipe': as many epochs in all as the task's shipped recipe spends (gates + evolution "
                        "+ QAT), i.e. dense training + the rest as --dc-steps prune-retrain rounds, and the recipe's "
                        "bit-search tolerance; records compare-deep-compression-recipe-budget[-s<S>]-seed<N>")
    p.add_argument("--dc-steps", type=int, default=4, help="prune-retrain rounds of deep-compression under --dc-budget recipe")
    p.add_argument("--recipe", default=None,
                   help="a variant of the task's shipped recipe (one task only, e.g. mnist-lenet5-shift): its training "
                        "overrides other than epochs (e.g. augment) apply to the dense model and every contender, "
                        "--dc-budget recipe matches its budget, and the records go under its name as their task")
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


def recipe_budget(recipe, dense_epochs: int) -> dict:
    """The training the task's shipped recipe spends, for a Deep-Compression run given the same budget:
    its epochs in all (teacher + gates + evolution fine-tunes + QAT; the recipes pin each), the share left for
    prune-retrain after the dense model's ``dense_epochs``, and the recipe's bit-search tolerance."""
    total, tolerance = 0, None
    # a stage without its own epochs trains the run's: the recipe-level train.epochs, else the model's default
    default_epochs = int(recipe.train.get("epochs") or default_config(recipe.model.name, recipe.data.name).epochs)
    if recipe.teacher is not None and not recipe.teacher.checkpoint:  # a teacher trained in the run is the recipe's too
        total += int(recipe.teacher.train.get("epochs") or default_epochs)
    for stage in recipe.stages:
        p = stage.params
        if stage.kind in ("train", "gates"):
            total += int(p.get("epochs") or default_epochs)
        elif stage.kind == "evolution":
            total += int(p["cycles"]) * int(p["finetune_epochs"])
        elif stage.kind == "quantise":
            total += int(p.get("qat_epochs", 0))
            tolerance = p.get("tolerance")
    if total <= dense_epochs:
        raise ValueError(f"recipe {recipe.name} trains {total} epochs in all, no more than the dense model's {dense_epochs}")
    return {"recipe": recipe.name, "recipe_epochs": total, "dense_epochs": dense_epochs,
            "finetune_epochs": total - dense_epochs, "tolerance": tolerance}


def _leaf_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[nn.Module, tuple]]:
    """Every leaf module the forward pass calls, with the arguments of its first call."""
    captured: dict[str, tuple[nn.Module, tuple]] = {}

    def hook(name):
        def keep(module, args):  # returns None: a pre-hook's return value would replace the input
            captured.setdefault(name, (module, args))
        return keep

    hooks = [m.register_forward_pre_hook(hook(name)) for name, m in model.named_modules() if name and not list(m.children())]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return captured


def _clock():
    """The calling thread's CPU time when torch computes on that one thread, wall time otherwise.

    On the shared benchmark machine a process at low priority is preempted every millisecond or so,
    so the wall time of a 5 ms forward pass is mostly other processes' time; with one intra-op thread
    all of torch's work runs on the calling thread and its CPU time is the work itself.
    """
    return time.thread_time if torch.get_num_threads() == 1 else time.perf_counter


def _paired_min_ms(first, second, repeats: int, warmup: int) -> tuple[float, float]:
    """Fastest of ``repeats`` runs of two callables timed alternately, in ms (clock: :func:`_clock`).

    The minimum, not the median, and alternating: whatever disturbance is left hits both alike and
    the least-disturbed run is the closest to the work itself.
    """
    clock = _clock()
    for _ in range(warmup):
        first(), second()
    a, b = [], []
    for _ in range(repeats):
        for fn, out in ((first, a), (second, b)):
            started = clock()
            fn()
            out.append((clock() - started) * 1000.0)
    return min(a), min(b)


def paired_times(dense: nn.Module, model: nn.Module, input_shape, batch_size: int, *, repeats: int = 50,
                 warmup: int = 5, seed: int = 0) -> dict:
    """Whole-forward and per-leaf times (fastest of ``repeats``) of ``model`` and ``dense`` on one random batch.

    Each leaf module (Conv, Linear, ReLU, pooling, ...) is timed on its own, called as the model calls
    it (arguments captured from one forward pass), so no hook overhead is timed; ``model`` and ``dense``
    alternate call by call. A leaf the compressed model no longer has (a residual section removed whole)
    is timed on the dense side only and takes 0 ms in ``model``: its time would otherwise count as dense glue.
    What the leaves do not account for (total - their sum) is the Python glue of the model's own ``forward``
    and module dispatch.
    Returns ``{"total_ms", "total_ms_dense", "layers": {name: (ms, ms_dense)}}``.
    """
    x = torch.randn(batch_size, *input_shape, generator=torch.Generator().manual_seed(seed))
    modes = (model.training, dense.training)
    model.eval(), dense.eval()
    try:
        with torch.inference_mode():
            total, total_dense = _paired_min_ms(lambda: model(x), lambda: dense(x), repeats, warmup)
            now, before = _leaf_inputs(model, x), _leaf_inputs(dense, x)
            layers = {}
            for name, (other, other_args) in before.items():
                module, args = now.get(name, (None, None))
                if module is None:  # removed: nothing to run on the compressed side
                    layers[name] = (0.0, _paired_min_ms(lambda: None, lambda: other(*other_args), repeats, warmup)[1])
                else:
                    layers[name] = _paired_min_ms(lambda: module(*args), lambda: other(*other_args), repeats, warmup)
    finally:
        model.train(modes[0]), dense.train(modes[1])
    return {"total_ms": total, "total_ms_dense": total_dense, "layers": layers}


def leaf_macs(model: nn.Module, input_shape) -> dict[str, int]:
    """MACs per leaf name (``macs_by_module`` prefixes names with the model's class name)."""
    prefix = type(model).__name__ + "."
    return {name[len(prefix):]: macs for name, macs in macs_by_module(model, input_shape).items() if name.startswith(prefix)}


def latency_breakdown(dense: nn.Module, model: nn.Module, input_shape, batch_sizes=(1, 64)) -> dict:
    """Per batch size: total and per-leaf times and MACs of ``model`` next to ``dense`` (same leaf names)."""
    macs, macs_dense = leaf_macs(model, input_shape), leaf_macs(dense, input_shape)
    out = {}
    for batch in batch_sizes:
        t = paired_times(dense, model, input_shape, batch)
        out[f"b{batch}"] = {
            "total_ms": t["total_ms"], "total_ms_dense": t["total_ms_dense"],
            "layers": [{"name": n, "ms": ms, "ms_dense": ms_dense, "macs": macs.get(n, 0), "macs_dense": macs_dense.get(n, 0)}
                       for n, (ms, ms_dense) in t["layers"].items()],
        }
    return out


def latency_reason(part: dict) -> str:
    """Why one batch size's latency speed-up falls short of the MAC cut, in numbers from ``part``.

    ``part`` is one batch size of :func:`latency_breakdown`. Each forward is split into MAC layers
    (Conv/Linear), the other layers (activations, pooling, reshapes; their cost follows the number of
    activations, not MACs) and the glue no leaf accounts for (module dispatch, the forward's own code).
    When >= 40 % of the compressed forward is outside MAC layers that is named first, with its largest
    layer; otherwise the MAC layers themselves sped up less than their MACs fell (per-call cost and
    small matrices). Either way the MAC layer taking the most time is named with the MACs it kept.
    """
    rows = part["layers"]
    mac_rows = [r for r in rows if r["macs_dense"] > 0]
    other_rows = [r for r in rows if r["macs_dense"] == 0]
    total, total_dense = part["total_ms"], part["total_ms_dense"]

    def split(key: str, whole: float) -> tuple[float, float, float]:
        mac, other = sum(r[key] for r in mac_rows), sum(r[key] for r in other_rows)
        return mac, other, max(whole - mac - other, 0.0)

    mac_ms, other_ms, glue_ms = split("ms", total)
    mac_ms_dense, other_ms_dense, glue_ms_dense = split("ms_dense", total_dense)
    macs_cut = sum(r["macs_dense"] for r in mac_rows) / max(1, sum(r["macs"] for r in mac_rows))
    top = max(mac_rows, key=lambda r: r["ms"])
    layer = (f"{top['name']} takes {top['ms'] / total:.0%} of it with {top['macs'] / max(1, top['macs_dense']):.0%} "
             f"of its MACs kept ({top['ms_dense'] / max(top['ms'], 1e-9):.1f}x faster)")
    mac_part = f"the MAC layers got {mac_ms_dense / max(mac_ms, 1e-9):.1f}x faster for {macs_cut:.1f}x fewer MACs"
    top_other = max(other_rows, key=lambda r: r["ms"], default=None)
    biggest = f"; {top_other['name']} alone {top_other['ms']:.3f} ms" if top_other else ""
    where = (f"other layers {other_ms:.3f} ms (dense {other_ms_dense:.3f}{biggest}), "
             f"glue {glue_ms:.3f} ms (dense {glue_ms_dense:.3f})")
    outside = other_ms + glue_ms
    if total and outside / total >= 0.4:
        return (f"{outside / total:.0%} of the compressed forward ({outside:.3f} of {total:.3f} ms CPU) is outside "
                f"MAC layers: {where}; {mac_part}; {layer}")
    return f"{mac_part}; {layer}; outside MAC layers: {where} of {total:.3f} ms CPU"


def latency_efficiency(rec: dict) -> dict[str, float]:
    """Measured latency speed-up / MAC cut per batch size (``{"b1": .., "b64": ..}``); empty when MACs barely fell."""
    macs_dense, macs = rec.get("macs_dense"), rec.get("macs")
    if not macs or not macs_dense or macs_dense / macs < 1.1:
        return {}
    out = {}
    for b in ("b1", "b64"):
        now, before = rec.get(f"latency_ms_{b}"), rec.get(f"latency_ms_{b}_dense")
        if now and before:
            out[b] = (before / now) / (macs_dense / macs)
    return out


def explain_latency(rec: dict, dense: nn.Module, model: nn.Module, input_shape) -> dict:
    """``extra`` fields of a record whose MACs fell: the per-layer breakdown and, per batch size, the reason.

    Written for every batch size (not only those under the floor in this record), so that the renderer
    finds a measured reason when the mean over seeds falls under it; ``latency_efficiency`` keeps this
    record's own ratios (measured latency speed-up / MAC cut) next to them.
    """
    efficiency = latency_efficiency(rec)
    if not efficiency:
        return {}
    breakdown = latency_breakdown(dense, model, input_shape)
    return {"latency_efficiency": efficiency, "latency_floor": LATENCY_EFFICIENCY_FLOOR,
            "latency_breakdown": breakdown, "latency_reason": {b: latency_reason(part) for b, part in breakdown.items()}}


def recipe_training(recipe, task: dict) -> dict:
    """The training overrides of a recipe that set how, not how long, to train (``augment``, ``label_smoothing``
    ...): what a recipe variant changes for every contender. Its epochs are its own budget (``recipe_budget``).
    The variant must train the task's model on the task's data."""
    if (recipe.model.name, recipe.data.name) != (task["model"], task["data"]):
        raise SystemExit(f"--recipe {recipe.name} trains {recipe.model.name or recipe.model.factory} on {recipe.data.name}, "
                         f"not the task's {task['model']} on {task['data']}: pass the variant of this task's recipe")
    return {k: v for k, v in recipe.train.items() if k not in ("epochs", "seed")}


def run_task(name: str, seed: int, args) -> None:
    task = TASKS[name]
    # a variant --recipe names (a name or a path) trains every contender its way; its records file under its name,
    # beside its compress_bench records. The task's own recipe is read only for --dc-budget recipe.
    recipe = load_recipe(args.recipe) if args.recipe else None
    recipe_name = recipe.name if recipe else name
    data = load_data(task["data"])
    config = default_config(task["model"], task["data"])
    overrides = recipe_training(recipe, task) if recipe else {}
    config = dataclasses.replace(config, **overrides)
    dense_epochs = args.dense_epochs or task.get("dense_epochs") or config.epochs
    if args.quick:
        data = subset(data, 6000, 1000, seed)
        dense_epochs = 1
    config = dataclasses.replace(config, epochs=dense_epochs, seed=seed)
    tag = f"compare-{recipe_name}-w{task['width']}-e{dense_epochs}-seed{seed}{'-quick' if args.quick else ''}"
    epochs = 1 if args.quick else args.finetune_epochs
    wanted = args.methods.split(",")
    gates_knobs = {**task.get("gates", {}), **dict(args.gates_set)}
    # built before the dense model trains, so that a mistyped --gates-set fails in seconds, not after it
    gates = _gates_method(gates_knobs, epochs, seed) if any(m.startswith(("gates", "torch-pruning")) for m in wanted) else None
    dense, dense_seconds = dense_model(task["model"], data, config, tag=tag, width_mult=task["width"])
    finetune_lr = args.finetune_lr or task.get("finetune_lr")
    finetune_config = dataclasses.replace(config, lr=finetune_lr) if finetune_lr else config
    adapter = Adapter(data=data, train_config=finetune_config)
    dense_fields = measured_fields(dense, data, suffix="_dense")
    dense_fields["train_seconds_dense"] = dense_seconds
    common = {"task": recipe_name, "seed": seed, "model": task["model"], "data": task["data"]}

    def record(method: str, model, seconds: float, variant: str = "", tag: str = args.tag, **extra) -> dict:
        rec = make_record(method=method, **common, **dense_fields, **measured_fields(model, data),
                          compress_seconds=seconds, extra={"finetune_epochs": epochs, "finetune_lr": finetune_config.lr,
                                 "quick": args.quick, "training_overrides": overrides, **extra})
        rec["extra"].update(explain_latency(rec, dense, model, data.input_shape))
        path = write_record(rec, args.results, name=_record_name(method + variant + tag, seed, args.quick))
        log.info("%s: test error %.4f, MACs %s, bytes %s -> %s", method, rec.get("test_error"), rec.get("macs"), rec.get("bytes"), path)
        return rec

    record("dense", dense, 0.0, tag="")  # the dense model is the same for every --tag: one record, not a copy per tag
    gates_model = None
    if gates is not None:
        started = time.perf_counter()
        gates_model, gates_record = gates.run(copy.deepcopy(dense), adapter)
        gates_seconds = time.perf_counter() - started
        if "gates" in wanted:
            gates_rec = record("gates", gates_model, gates_seconds, gates_knobs=gates_knobs,
                               **{k: gates_record.get(k) for k in ("widths_after", "removed_sections")})
        else:  # the chain (and Torch-Pruning) need only gates' size and time; its record is not rewritten
            gates_rec = {"params": count_params(gates_model), "macs": count_macs(gates_model, data.input_shape),
                         "compress_seconds": gates_seconds}
        target_macs = gates_rec["macs"]
        for importance in ("magnitude", "taylor"):
            method = f"torch-pruning-{importance}"
            if method in wanted:
                started = time.perf_counter()
                model, rec = torch_pruning_run(dense, adapter, importance=importance, target_macs=target_macs, finetune_epochs=epochs)
                record(method, model, time.perf_counter() - started,
                       **{k: rec[k] for k in ("target_macs", "reached_macs", "macs_off", "landing", "steps")})
    if "magnitude" in wanted:
        started = time.perf_counter()
        model, _ = torch_prune_global_magnitude(dense, adapter, sparsity=task["sparsity"], finetune_epochs=epochs)
        record("magnitude", model, time.perf_counter() - started, sparsity=task["sparsity"])
    work = f"runs/compare/{recipe_name}-seed{seed}{args.tag}"
    sweep = args.sparsities is not None
    budget = recipe_budget(recipe or load_recipe(name), dense_epochs) if args.dc_budget == "recipe" else None
    cycles, evo_epochs = 2, max(1, epochs // 2)
    chain_epochs = epochs + cycles * evo_epochs
    # In a sweep deep-compression gets the chain's whole fine-tuning budget (gates + evolution), so
    # the two bytes-vs-error curves are compared at equal epochs, not only at equal sparsity.
    dc_epochs = chain_epochs if sweep else epochs
    for sparsity in ([float(v) for v in args.sparsities.split(",")] if sweep else [task["sparsity"]]):
        suffix = f"-s{sparsity:g}" if sweep else ""
        if "deep-compression" in wanted:
            from netrazor.methods.baselines import global_magnitude_prune, iterative_magnitude_prune

            started = time.perf_counter()
            if budget:
                variant = "-recipe-budget" + suffix
                model, _ = iterative_magnitude_prune(copy.deepcopy(dense), sparsity, args.dc_steps, adapter=adapter,
                                                     finetune_epochs=budget["finetune_epochs"])
                dc_extra = {**budget, "steps": args.dc_steps, "matched_to": "recipe"}
            else:
                variant = suffix
                model, _ = global_magnitude_prune(copy.deepcopy(dense), sparsity, adapter=adapter, finetune_epochs=dc_epochs)
                dc_extra = {"finetune_epochs": dc_epochs} if sweep else {}
            tolerance = budget["tolerance"] if budget and budget["tolerance"] is not None else args.tolerance
            packed, info = quantise_and_pack(model, adapter, tolerance, f"{work}/deep-compression{variant}.nrz")
            rec = record("deep-compression", packed, time.perf_counter() - started, variant=variant,
                         sparsity=sparsity, **info, **dc_extra)
            _artifact_bytes(rec, info, args, seed, variant)
        if "gates+evolution+pack" in wanted and gates_model is not None:
            from netrazor.methods.evolution import EvolutionMethod

            started = time.perf_counter()
            # The same number of non-zero weights as deep-compression keeps, spread over the smaller net.
            density = min(1.0, (1 - sparsity) * dense_fields["params_dense"] / gates_rec["params"])
            evolved, _ = EvolutionMethod(targets=density, cycles=cycles, finetune_epochs=evo_epochs, seed=seed).run(copy.deepcopy(gates_model), adapter)
            packed, info = quantise_and_pack(evolved, adapter, args.tolerance, f"{work}/gates+evolution{suffix}.nrz")
            # A chain: its time and its training epochs are those of gates plus its own (not one stage's).
            rec = record("gates+evolution+pack", packed, gates_rec["compress_seconds"] + time.perf_counter() - started,
                         variant=suffix, sparsity=sparsity, density=density, finetune_epochs=chain_epochs,
                         finetune_epochs_split={"gates": epochs, "evolution": cycles * evo_epochs}, **info)
            _artifact_bytes(rec, info, args, seed, suffix)


def _gates_method(knobs: dict, epochs: int, seed: int):
    """The gates contender with ``knobs`` (the task's, then ``--gates-set``); a knob GatesMethod does not have, or
    a value it refuses, stops the run naming the knob."""
    from netrazor.methods.gates import GatesMethod

    try:
        return GatesMethod(**{**knobs, "epochs": epochs, "seed": seed})
    except (TypeError, ValueError) as err:  # an unknown knob is a TypeError naming it
        raise SystemExit(f"gates knobs {knobs}: {err}; see docs/methods/gates.md for GatesMethod's knobs") from err


def _artifact_bytes(rec: dict, info: dict, args, seed: int, variant: str = "") -> None:
    """``bytes`` of a packed result is the .nrz file, not the float32 size of the unpacked model."""
    rec["bytes"] = info["encoded_bytes"]
    write_record(rec, args.results, name=_record_name(rec["method"] + variant + args.tag, seed, args.quick))


def _record_name(method: str, seed: int, quick: bool) -> str:
    """``compare-<method>-seed<N>``: this harness's configurations never overwrite a method's own benchmark
    (``method`` may carry a variant, e.g. ``deep-compression-s0.99`` in a sparsity sweep)."""
    return f"compare-{method}-seed{seed}{'-quick' if quick else ''}"


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    if args.recipe and "," in args.tasks:
        raise SystemExit("--recipe names a variant of one task's recipe: pass a single --tasks with it")
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in args.tasks.split(","):
            if args.quick and name == "cifar10-resnet20":
                continue  # ~2 min per epoch even on a subset's worth of steps: not a smoke check
            run_task(name, seed, args)


if __name__ == "__main__":
    main()
