"""The run store: one folder per run plus a SQLite index of all runs.

Layout::

    runs/
      index.sqlite                 one row per run: id, kind, model, data, created, status, summary
      <id>/config.json             what was asked (model, data, training config, command)
      <id>/metrics.jsonl           one JSON line per epoch (the Trainer's history rows)
      <id>/model.safetensors       final weights            } netrazor.surgery.save_model format
      <id>/model.json              architecture + meta      } (zoo spec, changed layers or graph)
      <id>/summary.json            final numbers (val/test accuracy, params, seconds, ...)
      <id>/checkpoint*.json/.safetensors   epoch checkpoints of the Trainer (for --resume)

The folder is the source of truth; the index is a cache for listing (``reindex`` rebuilds it from
the folders). Every JSON file is written atomically; metrics.jsonl is appended line by line and
rewritten atomically on resume (so a line logged just before a crash is not duplicated).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import sqlite3
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from netrazor.errors import CheckpointError, ConfigError
from netrazor.io import atomic_write_text, read_json, write_json

log = logging.getLogger(__name__)

INDEX_NAME = "index.sqlite"
STATUSES = ("running", "done", "interrupted", "failed")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT,
    data TEXT,
    created TEXT NOT NULL,
    status TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '{}'
)
"""


class Run:
    """One run folder. Create it with :meth:`RunStore.create`, open it with :meth:`RunStore.get`."""

    def __init__(self, store: "RunStore", run_id: str):
        self.store = store
        self.id = run_id
        self.dir = store.root / run_id

    # ---------------------------------------------------------------- contents
    @property
    def config(self) -> dict:
        return read_json(self.dir / "config.json")

    def log_epoch(self, metrics: dict) -> None:
        """Append one epoch's metrics as a JSON line (flushed and fsynced)."""
        line = json.dumps(_jsonable(metrics), sort_keys=True)
        with open(self.dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def write_metrics(self, rows: Iterable[dict]) -> None:
        """Replace metrics.jsonl atomically (used when a resumed trainer restores its history)."""
        text = "".join(json.dumps(_jsonable(r), sort_keys=True) + "\n" for r in rows)
        atomic_write_text(self.dir / "metrics.jsonl", text)

    def metrics(self) -> list[dict]:
        path = self.dir / "metrics.jsonl"
        if not path.exists():
            return []
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                # A crash can cut the last line short; everything before it is intact.
                log.warning("%s: line %d is not valid JSON (cut short by a crash?); skipped", path, n)
        return rows

    def save_model(self, model: Any, extra: dict | None = None, example_input: Any = None) -> Path:
        """Write ``model.safetensors`` + ``model.json`` with netrazor's one saver; returns the weights path.

        Zoo models are stored by spec (plus any layers surgery changed), other modules as a graph;
        ``example_input`` is needed only for models that fall back to ``torch.export``.
        """
        from netrazor.surgery import save_model

        base = self.dir / "model"
        save_model(model, base, example_input=example_input, extra=extra)
        return base.with_name("model.safetensors")

    @property
    def model_path(self) -> Path:
        """Path stem of the saved model (``netrazor.surgery.load_model(run.model_path)``)."""
        return self.dir / "model"

    def write_summary(self, summary: dict, status: str = "done") -> None:
        """Write summary.json and copy it (with ``status``) into the index."""
        write_json(self.dir / "summary.json", _jsonable(summary))
        self.store._update(self.id, status=status, summary=summary)

    def summary(self) -> dict:
        path = self.dir / "summary.json"
        return read_json(path) if path.exists() else {}

    def set_status(self, status: str) -> None:
        self.store._update(self.id, status=status)

    @property
    def row(self) -> dict:
        return self.store._row(self.id)

    def __repr__(self) -> str:
        return f"Run({self.id!r}, dir={str(self.dir)!r})"


class RunStore:
    """All runs under ``root`` (default ``runs/``)."""

    def __init__(self, root: str | os.PathLike = "runs"):
        self.root = Path(root)

    # ---------------------------------------------------------------- index
    def _connect(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.root / INDEX_NAME, timeout=30)
        con.row_factory = sqlite3.Row
        con.execute(_SCHEMA)
        return con

    def _insert(self, row: dict) -> None:
        with closing(self._connect()) as con, con:
            con.execute(
                "INSERT OR REPLACE INTO runs (id, kind, model, data, created, status, summary) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row["id"], row["kind"], row.get("model"), row.get("data"), row["created"], row["status"],
                 json.dumps(_jsonable(row.get("summary", {})), sort_keys=True)),
            )

    def _update(self, run_id: str, status: str | None = None, summary: dict | None = None) -> None:
        if status is not None and status not in STATUSES:
            raise ConfigError(f"unknown run status {status!r}; use one of {', '.join(STATUSES)}.")
        with closing(self._connect()) as con, con:
            if status is not None:
                con.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))
            if summary is not None:
                con.execute("UPDATE runs SET summary = ? WHERE id = ?", (json.dumps(_jsonable(summary), sort_keys=True), run_id))

    def _row(self, run_id: str) -> dict:
        with closing(self._connect()) as con:
            row = con.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise CheckpointError(f"run {run_id!r} is not in {self.root / INDEX_NAME}; run `netrazor runs` to list runs.")
        return _row_dict(row)

    # ---------------------------------------------------------------- public
    def create(self, kind: str, config: dict, *, model: str | None = None, data: str | None = None,
               run_id: str | None = None) -> Run:
        """Make ``<root>/<id>/`` with config.json and an index row in status "running"."""
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", kind or ""):
            raise ConfigError(f"run kind {kind!r} must be a short word (letters, digits, - _ . +).")
        model = model if model is not None else _name_of(config.get("model"))
        data = data if data is not None else _name_of(config.get("data"))
        created = datetime.now(timezone.utc)
        run_id = run_id or _new_id(created, kind, model, data)
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", run_id):
            raise ConfigError(f"run id {run_id!r} may hold only letters, digits and - _ . +.")
        run = Run(self, run_id)
        if run.dir.exists():
            raise ConfigError(f"{run.dir} already exists; choose another run id or resume that run.")
        run.dir.mkdir(parents=True)
        write_json(run.dir / "config.json", _jsonable(dict(config, kind=kind, id=run_id, created=created.isoformat())))
        self._insert({"id": run_id, "kind": kind, "model": model, "data": data,
                      "created": created.isoformat(timespec="seconds"), "status": "running", "summary": {}})
        log.info("run %s created in %s", run_id, run.dir)
        return run

    def get(self, run: str | os.PathLike) -> Run:
        """Open a run by id, or by its folder path (any folder inside this store's root)."""
        path = Path(run)
        run_id = path.name if (path.is_dir() and path.parent.resolve() == self.root.resolve()) else str(run)
        if not (self.root / run_id / "config.json").exists():
            raise CheckpointError(
                f"no run {str(run)!r} under {self.root}; `netrazor runs --root {self.root}` lists the runs there."
            )
        return Run(self, run_id)

    def list(self, kind: str | None = None) -> list[dict]:
        """Index rows, oldest first (``summary`` decoded)."""
        with closing(self._connect()) as con:
            if kind:
                rows = con.execute("SELECT * FROM runs WHERE kind = ? ORDER BY created, id", (kind,)).fetchall()
            else:
                rows = con.execute("SELECT * FROM runs ORDER BY created, id").fetchall()
        return [_row_dict(r) for r in rows]

    def reindex(self) -> int:
        """Rebuild the index from the run folders (e.g. after copying runs between machines)."""
        count = 0
        for cfg_path in sorted(self.root.glob("*/config.json")):
            cfg = read_json(cfg_path)
            run_dir = cfg_path.parent
            summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}
            self._insert({
                "id": run_dir.name, "kind": cfg.get("kind", "unknown"), "model": _name_of(cfg.get("model")),
                "data": _name_of(cfg.get("data")), "created": str(cfg.get("created", ""))[:19] or "unknown",
                "status": "done" if summary else "interrupted", "summary": summary,
            })
            count += 1
        return count


def _row_dict(row: sqlite3.Row) -> dict:
    d = dict(row)
    try:
        d["summary"] = json.loads(d.get("summary") or "{}")
    except json.JSONDecodeError:
        d["summary"] = {}
    return d


def _name_of(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get("name")
    return str(value)


def _new_id(created: datetime, kind: str, model: str | None, data: str | None) -> str:
    parts = [created.strftime("%Y%m%d-%H%M%S"), kind, model, data, secrets.token_hex(2)]
    raw = "-".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", raw)


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON with the io module's encoder (tensors, paths, numpy scalars)."""
    from netrazor.io import _json_default

    return json.loads(json.dumps(obj, default=_json_default))
