"""One call that measures everything a benchmark record needs, under DESIGN.md's key names."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from netrazor.data.types import DataBundle
from netrazor.errors import ConfigError
from netrazor.measure._util import check_accepts
from netrazor.measure.accuracy import evaluate
from netrazor.measure.counts import count_nonzero, count_params, model_bytes
from netrazor.measure.latency import latency_ms
from netrazor.measure.macs import count_macs

SPLITS = ("val", "test")


def measure_model(
    model: nn.Module,
    input_shape: Sequence[int] | None,
    data: DataBundle | None = None,
    split: str | Sequence[str] = "val",
    latency: bool = True,
    repeats: int = 30,
    warmup: int = 5,
) -> dict:
    """Measure ``model``; keys: ``params, nonzero, macs, bytes``, with ``latency`` also
    ``latency_ms_b1, latency_ms_b64`` (medians), with ``data`` also ``{split}_error`` and
    ``{split}_loss`` (``split`` may also be a sequence, e.g. ``("val", "test")``). ``extra`` holds
    the latency percentiles and thread count.

    ``input_shape`` may be None when ``data`` is given (its ``input_shape`` is used). Use
    ``split="val"`` for every decision; ``"test"`` only for the final reported number.
    """
    splits = [split] if isinstance(split, str) else list(split)
    if not splits or any(s not in SPLITS for s in splits):
        raise ConfigError(f"split must be one of {', '.join(SPLITS)} (or a list of them), got {split!r}.")
    if input_shape is None:
        if data is None:
            raise ConfigError("measure_model needs input_shape (C, H, W) or a DataBundle to take it from.")
        input_shape = data.input_shape
    check_accepts(model, input_shape)
    record: dict = {
        "params": count_params(model),
        "nonzero": count_nonzero(model),
        "macs": count_macs(model, input_shape),
        "bytes": model_bytes(model),
    }
    extra: dict = {}
    if latency:
        for batch in (1, 64):
            timing = latency_ms(model, input_shape, batch_size=batch, repeats=repeats, warmup=warmup)
            record[f"latency_ms_b{batch}"] = timing["median"]
            extra[f"latency_ms_b{batch}_p10"] = timing["p10"]
            extra[f"latency_ms_b{batch}_p90"] = timing["p90"]
            extra["threads"] = timing["threads"]
    if data is not None:
        for name in splits:
            result = evaluate(model, getattr(data, name), data.mean, data.std)
            record[f"{name}_error"] = result["error"]
            record[f"{name}_loss"] = result["loss"]
    if extra:
        record["extra"] = extra
    return record
