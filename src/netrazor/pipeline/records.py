"""Benchmark records: one JSON file per run under ``benchmarks/results/<task>/``.

The keys are fixed by DESIGN.md ("Benchmark records"); ``benchmarks/RESULTS.md``
is rendered from these files only, so every number in it traces to a run.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from netrazor.io import write_json

RECORD_KEYS = (
    "task", "method", "seed", "model", "data", "commit", "command", "machine", "started_at",
    "params", "params_dense", "macs", "macs_dense", "bytes", "bytes_dense",
    "test_error", "val_error", "test_error_dense",
    "latency_ms_b1", "latency_ms_b1_dense", "latency_ms_b64", "latency_ms_b64_dense",
    "train_seconds", "train_seconds_dense", "compress_seconds",
    "layers", "layers_dense", "extra",
)


# What benchmark runs themselves write: a change there is a result, not a change to the code that made it
# (a run of several seeds rewrites the first seed's records before the next seed starts).
RUN_OUTPUTS = ("benchmarks/results", "benchmarks/RESULTS.md", "benchmarks/plots")


def git_commit(repo: str | os.PathLike | None = None) -> str:
    """The current commit hash (with ``-dirty`` when tracked files outside ``RUN_OUTPUTS`` have uncommitted changes)."""
    try:
        cwd = str(repo) if repo else None
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=cwd, check=True).stdout.strip()
        outside_outputs = [":(top)"] + [f":(top,exclude){p}" for p in RUN_OUTPUTS]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *outside_outputs],
                               capture_output=True, text=True, cwd=cwd).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_description() -> str:
    """CPU model, core count, torch version and thread count: enough to compare runs honestly."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}; {os.cpu_count()} cores; torch {torch.__version__}; {torch.get_num_threads()} threads; python {platform.python_version()}"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def command_line() -> str:
    """The command as typed (``sys.orig_argv`` keeps ``-m benchmarks.x``, which ``sys.argv`` loses)."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    argv[0] = Path(argv[0]).name
    return " ".join(shlex.quote(a) for a in argv)


def make_record(task: str, method: str, seed: int, model: str, data: str, **fields: Any) -> dict:
    """A record with the provenance keys filled in; unknown keys go into ``extra``."""
    record: dict[str, Any] = {
        "task": task,
        "method": method,
        "seed": seed,
        "model": model,
        "data": data,
        "commit": git_commit(),
        "command": command_line(),
        "machine": machine_description(),
        "started_at": now_iso(),
    }
    extra = dict(fields.pop("extra", {}) or {})
    for key, value in fields.items():
        if key in RECORD_KEYS:
            record[key] = value
        else:
            extra[key] = value
    if extra:
        record["extra"] = extra
    return record


def write_record(record: dict, results_dir: str | os.PathLike = "benchmarks/results", name: str | None = None) -> Path:
    """Write ``<results_dir>/<task>/<method>-seed<seed>.json`` atomically and return its path."""
    name = name or f"{record['method']}-seed{record['seed']}"
    path = Path(results_dir) / record["task"] / f"{name}.json"
    write_json(path, record)
    return path
