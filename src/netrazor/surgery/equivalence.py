"""Output-equivalence checks: every surgery pass proves itself with these.

A pass works on a deep copy and calls :func:`check_equivalence` before it hands the
copy back, so a failed pass never leaves the caller's model half-edited.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import torch
from torch import nn

from netrazor.errors import SurgeryError

log = logging.getLogger(__name__)


def as_batches(inputs: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Accept one batch or a list of batches."""
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    batches = list(inputs)
    if not batches or not all(isinstance(b, torch.Tensor) for b in batches):
        raise SurgeryError("inputs must be a tensor or a non-empty list of tensors; pass example batches.")
    return batches


def random_like_data(batch: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Random inputs with the scale of ``batch`` (standard normal rescaled to the batch's std)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch.shape, generator=gen, dtype=batch.dtype)
    scale = batch.float().std().clamp_min(1e-3)
    return noise * scale + batch.float().mean()


@torch.no_grad()
def max_relative_error(before: nn.Module, after: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor]) -> float:
    """Largest ``|a - b| / max|a|`` over all batches (relative to each batch's output scale).

    Relative to the batch's largest output, not elementwise: elementwise relative error
    explodes for outputs near zero, which float32 reassociation cannot avoid.
    """
    worst = 0.0
    for batch in as_batches(inputs):
        a = before(batch)
        b = after(batch)
        if a.shape != b.shape:
            raise SurgeryError(f"output shape changed from {tuple(a.shape)} to {tuple(b.shape)}; the pass is wrong.")
        scale = a.abs().max().clamp_min(1e-12)
        worst = max(worst, float((a - b).abs().max() / scale))
    return worst


def check_equivalence(
    before: nn.Module,
    after: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    rtol: float = 1e-5,
    *,
    random_inputs: bool = True,
    what: str = "surgery",
) -> float:
    """Check that ``after`` computes what ``before`` computes, on ``inputs`` and on random inputs.

    Both models are put in eval mode. ``inputs`` should be real data (the caller's examples);
    with ``random_inputs`` a random batch of the same shape and scale is added, so a pass that
    only works on the data's subspace is caught too. Returns the worst relative error
    (max |a-b| / max |a| per batch); raises :class:`SurgeryError` above ``rtol``.
    """
    batches = as_batches(inputs)
    if random_inputs:
        batches = batches + [random_like_data(b, seed=i) for i, b in enumerate(batches)]
    modes = (before.training, after.training)
    before.eval()
    after.eval()
    try:
        err = max_relative_error(before, after, batches)
    finally:
        before.train(modes[0])
        after.train(modes[1])
    log.debug("%s: max relative output error %.3g (rtol %.1g)", what, err, rtol)
    if not err <= rtol:  # also catches NaN
        raise SurgeryError(
            f"{what} changed the model's outputs (max relative error {err:.3g} > rtol {rtol:g}); "
            "the original model is left unchanged — report this model's structure as a bug, "
            "or loosen rtol only if you accept the difference."
        )
    return err


def iter_named_leaves(model: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    for name, module in model.named_modules():
        if not list(module.children()):
            yield name, module
