"""What every benchmark needs: data subsets, a cached dense model, and measured record fields.

One implementation, so that every benchmark trains its dense reference and measures its result
the same way (same latency protocol, same splits): numbers across benchmarks stay comparable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import torch
from torch import nn

from netrazor.data import DataBundle
from netrazor.measure import measure_model
from netrazor.methods.base import Adapter
from netrazor.models import build_model
from netrazor.surgery import load_model, save_model

log = logging.getLogger(__name__)

DENSE_CACHE = Path("runs/bench-dense")


def knob_arg(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` from the command line (a method knob), the value read as YAML: ``kappa=0.4``, ``layers=false``."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. kappa=0.4)")
    return key.strip(), yaml.safe_load(value)


def subset(data: DataBundle, n_train: int | None, n_val: int | None, seed: int,
           n_test: int | None = None) -> DataBundle:
    """Fixed random draws of ``n_train`` training, ``n_val`` validation and ``n_test`` test images.

    Random, not first-N: some sources store images class by class (the CIFAR-10 test split is), so
    a prefix would hold only a few classes. Each split has its own generator (seeds ``seed``,
    ``seed + 1``, ``seed + 2``), so a draw does not change when another split's size does. None or
    0 (or a size >= the split) keeps a split whole; the test split is kept whole by default —
    shrink it only to shorten quick runs (a smaller test set gives noisier numbers; it is never
    used to select anything).
    """
    return dataclasses.replace(
        data,
        train=_random_draw(data.train, n_train, seed),
        val=_random_draw(data.val, n_val, seed + 1),
        test=_random_draw(data.test, n_test, seed + 2),
    )


def _random_draw(images, n: int | None, seed: int):
    if not n or n >= len(images):
        return images
    g = torch.Generator().manual_seed(seed)
    return images.subset(torch.randperm(len(images), generator=g)[:n])


def dense_model(
    model_name: str,
    data: DataBundle,
    config,
    *,
    tag: str,
    width_mult: float = 1.0,
    cache: Path = DENSE_CACHE,
) -> tuple[nn.Module, float | None]:
    """Train (or load from ``cache/tag``) the dense reference; returns it and its training seconds.

    The cache file records the training recipe; a cached model trained with another recipe (say, after
    a recipe's label smoothing changed while the tag, which names only model, width, epochs and seed,
    did not) is retrained rather than silently reused.
    """
    path = Path(cache) / tag
    recipe = _recipe_fields(config)
    if Path(f"{path}.safetensors").exists():
        from netrazor.io import read_json

        extra = read_json(f"{path}.json").get("extra", {})
        cached = extra.get("recipe")
        if cached is None or cached == recipe:
            log.info("loading dense model %s%s", path, "" if cached else " (cache predates recipe checks)")
            return load_model(path).eval(), extra.get("train_seconds")
        changed = sorted(k for k in set(cached) | set(recipe) if cached.get(k) != recipe.get(k))
        log.warning("dense cache %s was trained with another recipe (%s differ): retraining", path, ", ".join(changed))
    torch.manual_seed(config.seed)
    model = build_model(model_name, num_classes=data.num_classes, in_channels=data.in_channels,
                        input_size=data.image_size, width_mult=width_mult)
    started = time.perf_counter()
    Adapter(data=data, train_config=config).train(model)
    seconds = time.perf_counter() - started
    save_model(model, path, extra={"train_seconds": seconds, "recipe": recipe})
    return model.eval(), seconds


def _recipe_fields(config) -> dict:
    """The recipe as JSON values (tuples become lists), so it compares equal to what the cache file holds."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def measured_fields(model: nn.Module, data: DataBundle, *, latency: bool = True, suffix: str = "") -> dict:
    """params, macs, bytes, latency b1/b64, val and test error — keyed for a record (``suffix="_dense"``)."""
    m = measure_model(model, data.input_shape, data=data, split=("val", "test"), latency=latency)
    keys = ("params", "macs", "bytes", "latency_ms_b1", "latency_ms_b64", "test_error")
    out = {f"{k}{suffix}": m[k] for k in keys if k in m}
    if not suffix:
        out["val_error"] = m.get("val_error")
    return out
