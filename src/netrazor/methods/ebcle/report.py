"""What ``netrazor depth-bound`` shows, computed in the library (the CLI only renders it)."""

from __future__ import annotations

from typing import Any

from torch import nn

from netrazor.data.entropy import dataset_entropy
from netrazor.methods.ebcle.probe import identity_probe, probe_batch
from netrazor.methods.ebcle.rules import entropy_ratio, get_rule, halvings
from netrazor.methods.ebcle.shape import shape


def depth_bound_report(
    data: Any,
    model_name: str | None = "resnet56",
    rule: str | None = None,
    rule_options: dict | None = None,
    keep: str = "params",
    entropy_mode: str = "channel",
    probe_model: nn.Module | None = None,
    probe_images: int = 256,
    **probe_kw: Any,
) -> dict:
    """Entropy statistics of ``data`` (training split), the rule's bound, the shaped variant of
    ``model_name`` next to the original (built for ``data``'s shape and classes), and, when
    ``probe_model`` is given, its identity probe on ``probe_images`` validation images (fixed random draw)."""
    stats = dataset_entropy(data, mode=entropy_mode)
    rule_obj = get_rule(rule, **(rule_options or {}))
    hw = tuple(data.image_size)
    bound = int(rule_obj.max_depth(stats, hw))
    out: dict[str, Any] = {
        "data": data.name,
        "entropy": {k: v for k, v in stats.items() if k != "per_image"},
        "rule": rule or "default",
        "rule_object": repr(rule_obj),
        "entropy_ratio": entropy_ratio(stats, getattr(rule_obj, "statistic", "mean")),
        "halvings": halvings(hw),
        "bound": bound,
    }
    if model_name:
        _, info = shape(model_name, bound, keep=keep, num_classes=data.num_classes, in_channels=data.in_channels,
                        input_size=hw)
        out["shape"] = info
    if probe_model is not None:
        x, y = probe_batch(data, probe_images, with_labels=True)
        report = identity_probe(probe_model, x, labels=y, **probe_kw)
        out["probe"] = report.to_dict()
    return out
