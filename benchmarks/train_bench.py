"""Issue 2's training targets: train a zoo model with its documented default recipe and record
the accuracy and the time it took.

    python -m benchmarks.train_bench --model resnet20 --data cifar10 --seed 0     # ~1 h on 1 core
    python -m benchmarks.train_bench --model lenet5 --data mnist --seed 0

The run goes through `netrazor.train.job.train_job` (the code behind `netrazor train`), into the
run store under runs/bench-train; an interrupted run is continued with `--resume RUN_DIR`.
Writes benchmarks/results/<data>-<model>/dense-e<epochs>-seed<N>.json (test/val error, params, MACs,
latency, train_seconds, the recipe and the per-epoch history).
"""

from __future__ import annotations

import argparse
import logging

from benchmarks.common import measured_fields
from netrazor.data import load_data
from netrazor.pipeline.records import make_record, write_record
from netrazor.surgery import load_model
from netrazor.train.job import train_job

TASK_DATA = {"mnist": "mnist", "fashion-mnist": "fmnist", "cifar10": "cifar10"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (documented runs: none)")
    parser.add_argument("--resume", default=None, help="continue an interrupted run (its folder)")
    parser.add_argument("--out", default="runs/bench-train")
    parser.add_argument("--results", default="benchmarks/results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    def progress(event: dict) -> None:
        if event.get("event") == "epoch_end":
            print(f"epoch {event['epoch'] + 1}: train loss {event['train_loss']:.4f}  val acc "
                  f"{100 * event['val_acc']:.2f} %  {event['images_per_s']:,.0f} img/s", flush=True)

    if args.resume:
        result = train_job(resume=args.resume, out=args.out, progress=progress)
    else:
        result = train_job(args.model, args.data, overrides={"seed": args.seed, "epochs": args.epochs},
                           out=args.out, progress=progress)
    s = result.summary
    data = load_data(s["data"])
    model = load_model(result.run.dir / "model").eval()
    fields = measured_fields(model, data)
    config = result.run.config
    record = make_record(
        f"{TASK_DATA.get(s['data'], s['data'])}-{s['model']}", "dense", s["seed"], s["model"], s["data"],
        **fields, train_seconds=s["train_seconds"],
        extra={"recipe": config["train"], "run": str(result.run.dir), "epochs": s["epochs"],
               "history": [{k: h[k] for k in ("epoch", "train_loss", "val_acc", "seconds") if k in h}
                           for h in result.history]},
    )
    path = write_record(record, args.results, name=f"dense-e{s['epochs']}-seed{s['seed']}")
    print(f"test error {100 * fields['test_error']:.2f} %  val error {100 * fields['val_error']:.2f} %  "
          f"train {s['train_seconds'] / 60:.1f} min -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
