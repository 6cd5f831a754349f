"""``EbcleMethod``: bound the depth from the data's entropy, shape a broader-shallower model, train it.

The methods contract (docs/CONTRACTS.md): a dataclass of knobs whose ``run(model, adapter)``
returns ``(model, record)``. EBCLE does not compress the incoming weights: it replaces the
architecture. ``run`` reads the incoming model's zoo spec (``model.netrazor_spec``), computes the
entropy statistics of ``adapter.data`` (training split) and the bound of the chosen depth rule,
builds the shaped model with :func:`netrazor.methods.ebcle.shape` and trains it from scratch with
the user's recipe through ``adapter.train``. The record holds the before/after sizes; the
incoming model is measured, not retrained (the benchmark trains both under the same recipe).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from netrazor.data.entropy import MODES, dataset_entropy
from netrazor.errors import ConfigError
from netrazor.measure import count_macs, count_params
from netrazor.methods.ebcle.rules import RULES, get_rule
from netrazor.methods.ebcle.shape import check_shape_knobs, conv_depth, shape
from netrazor.models import model_spec

log = logging.getLogger(__name__)


@dataclass
class EbcleMethod:
    """Knobs:

    rule          name of a depth rule in ``netrazor.methods.ebcle.rules.RULES`` (default: our
                  [REC] "entropy-halvings" rule).
    rule_options  keyword options of the rule (e.g. ``{"k": 4.0, "statistic": "p95"}``).
    max_depth     override the bound (main-path conv layers); None = from the rule.
    entropy_mode  "channel" or "luma" (netrazor.data.entropy).
    keep          "params" | "flops" | "width": what the shaped model keeps about constant.
    budget        fraction of the kept params/MACs (keep "params"/"flops"; [REC], shape()).
    round_to      channel multiple of the shaped model, 1 = none (ResNets; [REC], shape()).
    train         train the shaped model through ``adapter.train`` (False: return it untrained).
    epochs        training epochs (None = the adapter's recipe).
    evaluate_test also report the test error of the trained shaped model (final number only).
    """

    rule: str = "entropy-halvings"
    rule_options: dict = field(default_factory=dict)
    max_depth: int | None = None
    entropy_mode: str = "channel"
    keep: str = "params"
    budget: float = 1.0
    round_to: int = 1
    train: bool = True
    epochs: int | None = None
    evaluate_test: bool = True

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown EBCLE rule {self.rule!r}; choose one of {', '.join(sorted(RULES))}.")
        if not isinstance(self.rule_options, dict):
            raise TypeError(f"rule_options must be a dict, got {type(self.rule_options).__name__}.")
        if self.max_depth is not None and (not isinstance(self.max_depth, int) or self.max_depth < 1):
            raise ValueError(f"max_depth must be None or an int >= 1, got {self.max_depth!r}.")
        if self.entropy_mode not in MODES:
            raise ValueError(f"entropy_mode must be one of {', '.join(MODES)}, got {self.entropy_mode!r}.")
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise ValueError(f"epochs must be None or an int >= 1, got {self.epochs!r}.")
        try:  # bad rule options or shape knobs fail now, not after training (ValueError: what the recipe validator catches)
            get_rule(self.rule, **self.rule_options)
            check_shape_knobs(self.keep, self.budget, self.round_to)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc

    def bound(self, data: Any) -> tuple[int, dict]:
        """``(max_depth, entropy statistics)`` for a DataBundle."""
        stats = dataset_entropy(data, mode=self.entropy_mode)
        if self.max_depth is not None:
            return self.max_depth, stats
        rule = get_rule(self.rule, **self.rule_options)
        return int(rule.max_depth(stats, tuple(data.image_size))), stats

    def run(self, model: nn.Module, adapter: Any) -> tuple[nn.Module, dict]:
        spec = model_spec(model)  # ModelError for models the zoo did not build
        data = adapter.data
        bound, stats = self.bound(data)
        kw = dict(spec["kwargs"])
        shaped, info = shape(spec["name"], bound, keep=self.keep, budget=self.budget, round_to=self.round_to, **kw)
        shaped = shaped.to(adapter.device)
        input_shape = tuple(adapter.input_shape)
        record: dict[str, Any] = {
            "method": "ebcle",
            "rule": self.rule,
            "rule_options": dict(self.rule_options),
            "bound": bound,
            "entropy": {k: v for k, v in stats.items() if k != "per_image"},
            "shape": info,
            "spec": model_spec(shaped),
            "params_dense": count_params(model),
            "macs_dense": count_macs(model, input_shape),
            "layers_dense": conv_depth(model),
            "params": count_params(shaped),
            "macs": count_macs(shaped, input_shape),
            "layers": conv_depth(shaped),
        }
        if self.train:
            started = time.perf_counter()
            history = adapter.train(shaped, epochs=self.epochs, run_dir=adapter.run_dir)
            record["train_seconds"] = time.perf_counter() - started
            record["history"] = list(history)
            record["val_error"] = adapter.evaluate(shaped, "val")["error"]
            if self.evaluate_test:
                record["test_error"] = adapter.evaluate(shaped, "test")["error"]
        log.info("EBCLE: bound %d conv layers; %s %d -> %d layers, params %d -> %d", bound, spec["name"],
                 record["layers_dense"], record["layers"], record["params_dense"], record["params"])
        return shaped, record

    def knobs(self) -> dict:
        return dataclasses.asdict(self)
