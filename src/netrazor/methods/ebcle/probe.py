"""The a-posteriori identity probe: where do the blocks of a trained net stop transforming?

EBCLE's abstract [ABS] says that beyond the bound "identity transformations are prevalent". The
probe measures that on a trained model, per block, on a fixed batch (use the validation split):

- ``residual``: the relative residual norm ``||F(x)|| / ||x||`` of a residual block (zoo layout:
  ``block.branch`` is F, the block's input is x), averaged over examples. 0 for a zero branch.
- ``cka``: linear CKA (Kornblith et al. 2019) between the previous block's output (the first
  block: its own input) and this block's output, examples flattened. Works for any net.

- ``lesion`` (only when ``labels`` are given; residual blocks only): the accuracy lost on the
  probe batch when the block's branch is switched off (output ``relu(shortcut(x))``), the lesion
  study of Veit et al. (2016). A functional check of "insignificant contributions".

A block is *identity-like* [REC] by ``criterion``:
  "auto" (default): residual blocks by ``residual <= residual_threshold``, other blocks by
         ``cka >= cka_threshold``;
  "residual": residual norm only (non-residual blocks never count as identity-like);
  "cka": CKA only; "both": residual blocks need both tests, others the CKA test;
  "lesion": residual blocks by ``lesion <= lesion_threshold`` (needs ``labels``), others by CKA.
The *effective depth* is the number of blocks before they stay identity-like: the 1-based index
of the last block that is not identity-like (0 if all are). ``effective_conv_layers`` converts it
to the rule's unit: main-path conv layers executed up to that block's output (stem included,
projection shortcuts excluded). ``active_blocks`` counts all non-identity blocks.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from netrazor.errors import ConfigError
from netrazor.methods.ebcle.cka import cka_from_grams, gram

log = logging.getLogger(__name__)

CRITERIA = ("auto", "residual", "cka", "both", "lesion")
DEFAULT_RESIDUAL_THRESHOLD = 0.1
DEFAULT_CKA_THRESHOLD = 0.95
DEFAULT_LESION_THRESHOLD = 0.005


@dataclass
class ProbeReport:
    """Per-block table and effective depth of one probe run (JSON-able via :meth:`to_dict`)."""

    rows: list[dict]
    effective_depth: int
    effective_conv_layers: int
    active_blocks: int
    total_blocks: int
    total_conv_layers: int
    n_examples: int
    criterion: str
    residual_threshold: float
    cka_threshold: float
    debiased: bool
    lesion_threshold: float | None = None
    notes: list[str] = field(default_factory=list)
    active_conv_layers: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_residual_block(module: nn.Module) -> bool:
    """Zoo layout: ``branch`` (F) plus a ``shortcut`` that is not None (docs/models.md)."""
    return isinstance(getattr(module, "branch", None), nn.Module) and getattr(module, "shortcut", None) is not None


def main_path_convs(model: nn.Module) -> list[str]:
    """Names of the Conv2d layers on the main path (projection shortcuts excluded)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "shortcut" not in n.split(".")]


def find_blocks(model: nn.Module) -> list[str]:
    """Default blocks: residual blocks if the net has any (zoo layout: ``branch`` + ``shortcut``,
    MobileNetV2 blocks without a shortcut included), else every ``nn.ReLU`` module (one per
    conv/linear layer in the zoo's plain nets), else every Conv2d/Linear layer but the last."""
    names = [n for n, m in model.named_modules() if n and isinstance(getattr(m, "branch", None), nn.Module) and hasattr(m, "shortcut")]
    if names:
        return names
    names = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    if names:
        return names
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return layers[:-1]


def _norms(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(t.shape[0], -1).double().norm(dim=1)


def identity_probe(
    model: nn.Module,
    images: torch.Tensor,
    blocks: Sequence[str] | None = None,
    *,
    criterion: str = "auto",
    residual_threshold: float = DEFAULT_RESIDUAL_THRESHOLD,
    cka_threshold: float = DEFAULT_CKA_THRESHOLD,
    debiased: bool = True,
    labels: torch.Tensor | None = None,
    lesion_threshold: float = DEFAULT_LESION_THRESHOLD,
) -> ProbeReport:
    """Probe ``model`` on ``images`` (a normalised float batch ``[n, C, H, W]``, e.g.
    ``probe_batch(bundle, 256)``); ``blocks`` are module names (default
    :func:`find_blocks`). Thresholds and criterion: see the module docstring. The model is run in
    eval mode under ``torch.no_grad``; its mode is restored afterwards."""
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown probe criterion {criterion!r}; choose one of {', '.join(CRITERIA)}.")
    if criterion == "lesion" and labels is None:
        raise ConfigError("criterion='lesion' needs the probe batch's labels; pass labels=.")
    if not torch.is_floating_point(images):
        raise ConfigError("identity_probe needs normalised float images; pass bundle.normalize(uint8_images).")
    modules = dict(model.named_modules())
    names = list(blocks) if blocks is not None else find_blocks(model)
    missing = [n for n in names if n not in modules]
    if missing:
        raise ConfigError(f"no modules named {missing} in the model; pass names from model.named_modules().")
    if not names:
        raise ConfigError("the model has no blocks to probe; pass blocks=[module names].")
    conv_names = set(main_path_convs(model))
    state: dict[str, Any] = {"convs": 0, "order": []}
    records: dict[str, dict] = {n: {} for n in names}
    handles = []

    def count_conv(module, inputs):
        state["convs"] += 1

    def entry_hook(name):
        def hook(module, inputs):
            records[name].setdefault("conv_entry", state["convs"])
        return hook

    def block_hook(name):
        def hook(module, inputs, output):
            rec = records[name]
            x = inputs[0]
            if "gram_in" not in rec:  # first call only (a block reused twice keeps its first use)
                rec["gram_in"] = gram(x)
                rec["gram_out"] = gram(output)
                rec["conv_depth"] = state["convs"]
                rec["in_norm"] = _norms(x)
                state["order"].append(name)
        return hook

    def branch_hook(name):
        def hook(module, inputs, output):
            records[name].setdefault("branch_norm", _norms(output))
        return hook

    for name, module in modules.items():
        if name in conv_names:
            handles.append(module.register_forward_pre_hook(count_conv))
    for name in names:
        block = modules[name]
        handles.append(block.register_forward_pre_hook(entry_hook(name)))
        handles.append(block.register_forward_hook(block_hook(name)))
        if is_residual_block(block):
            handles.append(block.branch.register_forward_hook(branch_hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            param = next(model.parameters(), None)
            x = images if param is None else images.to(device=param.device, dtype=param.dtype)
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    lesions = _lesions(model, x, labels, [n for n in state["order"] if is_residual_block(modules[n])], modules) \
        if labels is not None else {}

    notes = []
    unused = [n for n in names if "gram_out" not in records[n]]
    if unused:
        notes.append(f"blocks not executed in the forward pass (skipped): {unused}")
    rows, prev_gram = [], None
    for index, name in enumerate(state["order"]):
        rec = records[name]
        reference = rec["gram_in"] if prev_gram is None else prev_gram
        cka = cka_from_grams(reference, rec["gram_out"], debiased)
        residual = None
        if "branch_norm" in rec:
            residual = float((rec["branch_norm"] / rec["in_norm"].clamp_min(1e-12)).mean())
        rows.append({"index": index + 1, "name": name, "residual": residual, "cka": cka,
                     "lesion": lesions.get(name), "conv_depth": int(rec["conv_depth"]),
                     "convs": int(rec["conv_depth"] - rec["conv_entry"])})
        prev_gram = rec["gram_out"]
    return summarise(rows, criterion=criterion, residual_threshold=residual_threshold, cka_threshold=cka_threshold,
                     lesion_threshold=lesion_threshold if labels is not None else None,
                     total_conv_layers=len(conv_names), n_examples=int(images.shape[0]), debiased=debiased,
                     notes=notes)


def is_identity_like(row: dict, criterion: str = "auto", residual_threshold: float = DEFAULT_RESIDUAL_THRESHOLD,
                     cka_threshold: float = DEFAULT_CKA_THRESHOLD,
                     lesion_threshold: float | None = DEFAULT_LESION_THRESHOLD) -> bool:
    """The identity-like test of one probe row (see the module docstring for the criteria)."""
    residual, cka, lesion = row.get("residual"), row["cka"], row.get("lesion")
    res_ok = residual is not None and residual <= residual_threshold
    cka_ok = cka >= cka_threshold
    if criterion == "lesion":
        if lesion_threshold is None:
            raise ConfigError("criterion='lesion' needs a lesion_threshold and rows with a lesion column (labels=).")
        return lesion <= lesion_threshold if lesion is not None else cka_ok
    if criterion == "residual":
        return res_ok
    if criterion == "cka":
        return cka_ok
    if criterion == "both":
        return (res_ok and cka_ok) if residual is not None else cka_ok
    return res_ok if residual is not None else cka_ok


def summarise(rows: list[dict], *, criterion: str = "auto", residual_threshold: float = DEFAULT_RESIDUAL_THRESHOLD,
              cka_threshold: float = DEFAULT_CKA_THRESHOLD, lesion_threshold: float | None = DEFAULT_LESION_THRESHOLD,
              total_conv_layers: int | None = None, n_examples: int = 0, debiased: bool = True,
              notes: list[str] | None = None) -> ProbeReport:
    """Classify probe rows (``index, name, residual, cka, lesion, conv_depth, convs``) and derive the
    effective depth. Re-run it on saved rows to try other criteria or thresholds without the model.

    ``active_conv_layers`` = convs before the first block (the stem) + the own main-path convs of
    every block that is not identity-like: the depth left if identity-like blocks were dropped."""
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown probe criterion {criterion!r}; choose one of {', '.join(CRITERIA)}.")
    rows = [dict(r) for r in rows]
    for r in rows:
        r["identity_like"] = bool(is_identity_like(r, criterion, residual_threshold, cka_threshold, lesion_threshold))
    last_active = max((r["index"] for r in rows if not r["identity_like"]), default=0)
    stem = (rows[0]["conv_depth"] - rows[0].get("convs", 0)) if rows else 0
    return ProbeReport(
        rows=rows,
        effective_depth=last_active,
        effective_conv_layers=rows[last_active - 1]["conv_depth"] if last_active else 0,
        active_blocks=sum(not r["identity_like"] for r in rows),
        total_blocks=len(rows),
        total_conv_layers=int(total_conv_layers if total_conv_layers is not None else (rows[-1]["conv_depth"] if rows else 0)),
        n_examples=int(n_examples),
        criterion=criterion,
        residual_threshold=float(residual_threshold),
        cka_threshold=float(cka_threshold),
        debiased=bool(debiased),
        notes=list(notes or []),
        lesion_threshold=None if lesion_threshold is None else float(lesion_threshold),
        active_conv_layers=stem + sum(r.get("convs", 0) for r in rows if not r["identity_like"]),
    )


def _lesions(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, names: list[str], modules: dict) -> dict:
    """Accuracy drop on (x, labels) when each residual block's branch outputs zeros."""
    labels = labels.to(x.device)
    was_training = model.training
    model.eval()
    out = {}
    try:
        with torch.no_grad():
            base = float((model(x).argmax(1) == labels).float().mean())
            for name in names:
                handle = modules[name].branch.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
                try:
                    acc = float((model(x).argmax(1) == labels).float().mean())
                finally:
                    handle.remove()
                out[name] = base - acc
    finally:
        model.train(was_training)
    return out


def probe_batch(bundle: Any, n: int = 256, with_labels: bool = False, seed: int = 0):
    """A fixed probe batch: ``n`` validation images drawn with a fixed generator (``seed``),
    normalised (and their labels with ``with_labels=True``, for the lesion column).

    A random draw, not the first ``n``: a split stored class by class (CIFAR-10 read from class
    folders) would otherwise give a probe batch of one or two classes."""
    split = bundle.val
    if len(split) == 0:
        raise ConfigError("the data set has an empty validation split; load it with val_size > 0 for the probe.")
    n = min(n, len(split))
    index = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    x = bundle.normalize(split.images[index])
    return (x, split.labels[index]) if with_labels else x
