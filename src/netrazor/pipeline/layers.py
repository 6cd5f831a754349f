"""Per-layer structure of a model: width, non-zero fraction and (when quantised) bits.

Used by stage records and by the report's per-layer charts.
"""

from __future__ import annotations

from torch import nn


def layer_profile(model: nn.Module, bits: dict[str, int] | None = None) -> list[dict]:
    """One entry per Conv/Linear layer in module order: name, kind, width, params, density, bits."""
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            weight = module.weight
            width = weight.shape[0]
            params = weight.numel()
            density = float((weight != 0).sum().item()) / max(1, params)
            rows.append({
                "name": name,
                "kind": type(module).__name__,
                "width": int(width),
                "params": int(params),
                "density": density,
                "bits": (bits or {}).get(name, (bits or {}).get(f"{name}.weight")),
            })
    return rows
