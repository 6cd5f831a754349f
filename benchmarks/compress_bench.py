"""A shipped recipe end to end (prune → quantise → pack), recorded: bytes vs dense float32, test error after unpack.

Runs the recipe through ``netrazor.pipeline.compress`` — the code behind ``netrazor compress`` —
with the recipe's seed replaced by ``--seed``, then writes one record
``benchmarks/results/<task>/<method>-seed<N>.json`` (task = the recipe's name, e.g. ``mnist-lenet5``;
method = the recipe's stage kinds joined by ``+``, e.g. ``gates+evolution+quantise+pack``).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.compress_bench --recipe mnist-lenet5 --seed 0
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.compress_bench --recipe mnist-lenet300 --seed 0

Numbers: ``bytes`` is the .nrz file's size, ``bytes_dense`` the float32 bytes of the unpruned
architecture; ``test_error`` is measured on the model *unpacked from the file* (the pipeline's
last stage hands that model on); ``val_error`` is the same model on the validation split (every
choice inside the recipe was made on validation data only). ``compress_seconds`` is the sum of the
stages' own times (a resumed run keeps them). The run folder is ``<--run-root>/compress-<recipe>-seed<N>``;
an existing complete run of the same recipe is reused (``--fresh`` deletes it first).
``--fork-from RUN --reuse N`` starts the run folder from the first N stages of another run of a recipe
that shares them (``netrazor.pipeline.fork_run`` checks they are identical): variants of a recipe's
later stages then cost only those stages.

Targets (issue 8): LeNet-5-Caffe >= 300x at <= 1.0 % test error; LeNet-300-100 >= 70x at <= 1.8 %.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from netrazor.pipeline import compress, fork_run, load_recipe
from netrazor.pipeline.runner import load_recipe_data
from netrazor.pipeline.records import make_record, write_record

log = logging.getLogger("benchmarks.compress_bench")

TARGETS = {"mnist-lenet5": (300.0, 0.010), "mnist-lenet300": (70.0, 0.018)}  # (ratio, test error) of issue 8


def method_name(recipe) -> str:
    return "+".join(stage.kind for stage in recipe.stages)


def build_record(recipe, result) -> dict:
    """The benchmark record of one finished ``compress`` run (DESIGN.md "Benchmark records")."""
    summary = result.summary
    dense, final = summary["dense"], summary["final"]
    stages = result.stages
    pack_stage = next((s for s in reversed(stages) if s["kind"] == "pack"), None)
    report = (pack_stage or {}).get("record", {}).get("pack_report", {}) if pack_stage else {}
    nbytes = int(summary["bytes"]) if summary.get("bytes") is not None else None
    bytes_dense = int(dense["bytes"])
    extra = {
        "recipe": recipe.model_dump(mode="json"),
        "ratio": bytes_dense / nbytes if nbytes else None,
        "target": dict(zip(("ratio", "test_error"), TARGETS.get(recipe.name, (None, None)))),
        "run_dir": str(result.run_dir),
        "stages": [
            {"kind": s["kind"], "params": s["params"], "seconds": s["seconds"], "params_after": s["after"]["params"],
             "nonzero_after": s["after"]["nonzero"], "bytes_after": s["after"]["bytes"],
             "val_error_after": s["after"]["val_error"]}
            for s in stages
        ],
        "layer_profile": final.get("layer_profile"),
        "nonzero": final.get("nonzero"),
        "pack": {k: report.get(k) for k in ("dense_bytes", "removal_bytes", "quantized_bytes", "encoded_bytes",
                                            "shannon_bound_bytes", "stream_bytes", "overhead", "bits")},
        "pack_tensors": [{k: t.get(k) for k in ("name", "shape", "kind", "nnz", "position_kind", "value_kind", "levels",
                                                "section_bytes")} for t in report.get("tensors", [])],
        "quantisation_bias_bits": ((stages[-1].get("artifacts") or {}).get("quantisation") or {}).get("bias_bits"),
        "dense_val_error_note": "the recipe trains from scratch: the dense row is the untrained starting model",
    }
    return make_record(
        recipe.name, method_name(recipe), recipe.seed, recipe.model.name or recipe.model.factory, recipe.data.name,
        params=int(final["params"]), params_dense=int(dense["params"]),
        macs=int(final["macs"]), macs_dense=int(dense["macs"]),
        bytes=nbytes, bytes_dense=bytes_dense,
        test_error=float(summary["test_error"]), val_error=float(final["val_error"]),
        latency_ms_b1=final.get("latency_ms_b1"), latency_ms_b1_dense=dense.get("latency_ms_b1"),
        latency_ms_b64=final.get("latency_ms_b64"), latency_ms_b64_dense=dense.get("latency_ms_b64"),
        compress_seconds=float(sum(s["seconds"] for s in stages)),
        layers=sum(1 for row in final.get("layer_profile") or [] if row.get("params")),
        layers_dense=len(dense.get("layer_profile") or []),
        extra=extra,
    )


def latency_explanation(recipe, result, record: dict, data) -> dict:
    """Issue 10's latency check for a recipe's result: where its MACs fell, the per-layer CPU times of the
    final model next to the recipe's dense starting model (same architecture, untrained: timing does not
    depend on the weights) and why the speed-up falls short of the MAC cut (``compare.explain_latency``)."""
    from benchmarks.compare import explain_latency
    from netrazor.pipeline.runner import build_recipe_model

    return explain_latency(record, build_recipe_model(recipe, data).eval(), result.model.eval(), data.input_shape)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", required=True, help="shipped recipe name (netrazor recipes) or a YAML path")
    ap.add_argument("--seed", type=int, default=0, help="replaces the recipe's seed")
    ap.add_argument("--run-root", default="runs/bench-compress", help="where the run folder goes")
    ap.add_argument("--fresh", action="store_true", help="delete this recipe+seed's run folder first")
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument("--fork-from", default=None,
                    help="a run folder whose first --reuse stages this recipe shares (checked): they are copied, "
                         "not recomputed (variants of a recipe's later stages)")
    ap.add_argument("--reuse", type=int, default=0, help="with --fork-from: the number of leading stages to reuse")
    args = ap.parse_args(argv)
    if (args.fork_from is None) != (args.reuse == 0):
        ap.error("--fork-from and --reuse go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    recipe = load_recipe(args.recipe)
    recipe = recipe.model_copy(update={"seed": args.seed})
    run_dir = Path(args.run_root) / f"compress-{recipe.name}-seed{recipe.seed}"
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    if args.fork_from:  # a fork made before is resumed as it is
        fork_run(args.fork_from, run_dir, recipe, args.reuse)
    data = load_recipe_data(recipe)  # once, for the run and for the latency check
    result = compress(recipe, run_dir, data=data)
    record = build_record(recipe, result)
    record["extra"].update(latency_explanation(recipe, result, record, data))
    path = write_record(record, args.results)
    ratio = record["extra"]["ratio"]
    log.info("%s seed %d: %s -> %s bytes (%.1fx), test error %.2f %% (val %.2f %%) -> %s", recipe.name, recipe.seed,
             record["bytes_dense"], record["bytes"], ratio or float("nan"), 100 * record["test_error"],
             100 * record["val_error"], path)
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
