"""Choose bit widths per layer: the fewest within a tolerance, or the best under a budget.

``eval_fn(model) -> float`` is supplied by the caller and is *lower-is-better*: a
validation error, an accuracy drop, or a teacher–student divergence (METHODS.md §4).
To search on accuracy pass ``lambda m: 1 - accuracy(m)``.

[REC] Both procedures are our reconstruction of Directed Evolution's "search
quantisation alternatives for the fewest bits with acceptable loss" and "allocate bits
greedily by marginal divergence per bit":

- ``search_bits``: each layer alone (the others kept float) walks down the bit widths and keeps
  the fewest whose eval stays within ``baseline + tolerance``; the walk stops after ``patience + 1``
  failures in a row (error grows as bits shrink, but a validation accuracy moves in steps of one
  image: on LeNet-5 a layer failed at 5 bits by one image and passed at 4 and 3, so a walk that
  stops at the first failure kept 6 bits). The threshold carries a 1e-9 slack: a difference of two
  accuracies such as 0.9892 − 0.9882 is 0.0010000000000000009 in floating point, not 0.001.
  Layer errors add up when all layers are quantised together, so when ``joint_fix`` is set and
  the joint eval exceeds the tolerance, one layer gets its next wider width, repeatedly, until the
  joint model is within tolerance (or all layers are back at the widest width). Which layer:
  every raisable layer is tried (joint eval measured) and the raise with the lowest joint eval
  wins, ties going to the one adding the fewest index bits.
  (An earlier rule raised "the layer whose own eval rose most"; on a noisy validation accuracy it
  walked one layer of LeNet-300 from 3 to 8 bits while the joint eval did not move.)
  Then, when the joint model fits, each layer bias of at least ``bias_min_size`` elements walks
  down the ``bias_bits`` widths (k-means per tensor) with the whole quantised model and keeps the
  fewest whose joint eval still fits the same threshold (a bias is small, but stored as float32
  it was a quarter of a pruned LeNet-5's file).
- ``allocate_bits``: measure each layer's eval curve once (layer alone at each width), then
  greedily lower the layer with the smallest eval increase per bit saved, until the total of
  ``bits × surviving weights`` fits ``budget_bits``. The final joint eval is measured and recorded.
"""

from __future__ import annotations

import copy
import logging
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from netrazor.errors import ConfigError
from netrazor.quant.model import QuantResult, bias_layers, layer_nonzeros, quantizable_layers, quantize_model
from netrazor.quant.quantizers import quantize_tensor

log = logging.getLogger(__name__)

DEFAULT_BITS = (8, 7, 6, 5, 4, 3, 2, 1)
# [REC] biases smaller than this stay float32: their codebook + stream headers would cost about
# as much as the raw floats (the codec keeps the raw form then anyway), so quantising them only loses.
BIAS_MIN_SIZE = 32
EvalFn = Callable[[nn.Module], float]


def _check_bit_list(bits: Sequence[int]) -> list[int]:
    widths = sorted({int(b) for b in bits}, reverse=True)
    if not widths or widths[-1] < 1 or widths[0] > 8:
        raise ConfigError(f"bit widths {list(bits)} must be a non-empty set of integers from 1 to 8.")
    return widths


def layer_curves(
    model: nn.Module,
    eval_fn: EvalFn,
    bits: Sequence[int] = DEFAULT_BITS,
    method: str = "kmeans",
    per_channel: bool = False,
    stop_above: float | None = None,
    layers: Sequence[str] | None = None,
    patience: int = 0,
) -> dict[str, dict[int, float]]:
    """``{layer: {bits: eval}}`` with only that layer quantised (others float).

    Widths are tried from widest to narrowest; with ``stop_above`` a layer's walk stops after
    ``patience + 1`` widths in a row whose eval exceeds it (their values are still recorded).
    """
    widths = _check_bit_list(bits)
    work = copy.deepcopy(model)
    mods = quantizable_layers(work)
    names = list(layers) if layers is not None else list(mods)
    curves: dict[str, dict[int, float]] = {}
    with torch.no_grad():
        for name in names:
            weight = mods[name].weight
            original = weight.data.clone()
            curve: dict[int, float] = {}
            failures = 0
            for b in widths:
                weight.data.copy_(quantize_tensor(original, b, method=method, per_channel=per_channel).dequantized)
                curve[b] = float(eval_fn(work))
                log.debug("layer %s at %d bits: eval %.6g", name, b, curve[b])
                failures = failures + 1 if stop_above is not None and curve[b] > stop_above else 0
                if failures > patience:
                    break
            weight.data.copy_(original)
            curves[name] = curve
    return curves


def search_bits(
    model: nn.Module,
    eval_fn: EvalFn,
    tolerance: float,
    bits: Sequence[int] = DEFAULT_BITS,
    method: str = "kmeans",
    per_channel: bool = False,
    joint_fix: bool = True,
    bias_bits: Sequence[int] | None = DEFAULT_BITS,
    bias_min_size: int = BIAS_MIN_SIZE,
    patience: int = 1,
) -> QuantResult:
    """The fewest bits per layer whose eval stays within ``baseline + tolerance`` (see module doc).

    ``bias_bits``: widths tried for the biases (None: biases stay float32); ``bias_min_size``:
    smaller biases stay float32; ``patience``: failures in a row a layer's walk tolerates before
    it stops (0 = stop at the first failure). Returns a :class:`QuantResult` whose ``evals``
    holds ``baseline``, ``threshold``, ``curves`` (per layer: bits → eval), ``single`` (per layer: eval at its chosen
    width), ``joint`` and ``bias_curves`` (per biased layer: bits → joint eval).
    """
    if tolerance < 0:
        raise ConfigError(f"tolerance={tolerance} must be >= 0 (an allowed increase of eval_fn).")
    widths = _check_bit_list(bits)
    baseline = float(eval_fn(model))
    threshold = baseline + tolerance + 1e-9  # slack for float rounding of eval differences (module doc)
    curves = layer_curves(model, eval_fn, widths, method, per_channel, stop_above=threshold, patience=patience)
    chosen: dict[str, int] = {}
    for name, curve in curves.items():
        ok = [b for b, v in curve.items() if v <= threshold]
        chosen[name] = min(ok) if ok else widths[0]
    result = quantize_model(model, chosen, method=method, per_channel=per_channel)
    joint = float(eval_fn(result.model))
    fixes = []
    nnz = layer_nonzeros(model)
    while joint_fix and joint > threshold:
        raisable = [n for n in chosen if chosen[n] < widths[0]]
        if not raisable:
            break
        # measure every one-step raise on the joint model; keep the best (fewest added bits on a tie)
        trials = []
        for name in raisable:
            wider = min(b for b in widths if b > chosen[name])
            trial = quantize_model(model, {**chosen, name: wider}, method=method, per_channel=per_channel)
            trials.append((float(eval_fn(trial.model)), nnz.get(name, 0) * (wider - chosen[name]), name, wider, trial))
        joint, _, name, wider, result = min(trials, key=lambda t: (t[0], t[1]))
        chosen[name] = wider
        fixes.append({"layer": name, "bits": wider, "joint": joint})
    bias_curves: dict[str, dict[int, float]] = {}
    if bias_bits is not None and joint <= threshold:
        bias_chosen, bias_curves = _search_bias_bits(result.model, eval_fn, threshold, _check_bit_list(bias_bits), bias_min_size)
        if bias_chosen:
            result = quantize_model(model, chosen, method=method, per_channel=per_channel, bias_bits=bias_chosen)
            joint = float(eval_fn(result.model))
    result.evals = {
        "baseline": baseline,
        "tolerance": tolerance,
        "threshold": threshold,
        "curves": {n: {str(b): v for b, v in c.items()} for n, c in curves.items()},
        "single": {n: curves[n].get(chosen[n]) for n in chosen},
        "joint": joint,
        "joint_within_tolerance": joint <= threshold,
        "fixes": fixes,
        "bias_curves": {n: {str(b): v for b, v in c.items()} for n, c in bias_curves.items()},
    }
    log.info("bit search: %s, biases %s (joint eval %.6g, threshold %.6g)", chosen, result.bias_bits, joint, threshold)
    return result


def _search_bias_bits(
    quantised: nn.Module, eval_fn: EvalFn, threshold: float, widths: list[int], min_size: int
) -> tuple[dict[str, int], dict[str, dict[int, float]]]:
    """Per biased layer, in order, the fewest bits whose *joint* eval (weights quantised, the
    biases chosen so far quantised) stays within ``threshold``; a layer whose widest width already
    fails keeps a float32 bias. Returns ``(chosen, curves)``."""
    work = copy.deepcopy(quantised)
    chosen: dict[str, int] = {}
    curves: dict[str, dict[int, float]] = {}
    with torch.no_grad():
        for name, module in bias_layers(work, min_size).items():
            original = module.bias.data.clone()
            curve: dict[int, float] = {}
            best = None
            for b in widths:
                module.bias.data.copy_(quantize_tensor(original, b, method="kmeans").dequantized)
                curve[b] = float(eval_fn(work))
                if curve[b] > threshold:
                    break
                best = b
            curves[name] = curve
            if best is None:
                module.bias.data.copy_(original)
            else:
                chosen[name] = best
                module.bias.data.copy_(quantize_tensor(original, best, method="kmeans").dequantized)
    return chosen, curves


def layer_bit_cost(nonzeros: int, bits: int, codebooks: int = 1) -> int:
    """Bits a layer costs at ``bits``: one index per surviving weight plus its float32 codebook(s)
    (one per output channel for per-channel uniform quantisation)."""
    return nonzeros * bits + 32 * (2**bits) * codebooks


def allocate_bits(
    model: nn.Module,
    eval_fn: EvalFn,
    budget_bits: int,
    bits: Sequence[int] = DEFAULT_BITS,
    method: str = "kmeans",
    per_channel: bool = False,
) -> QuantResult:
    """Greedy allocation under a total budget of ``budget_bits`` (indices + codebooks) — see module doc.

    Raises ``ConfigError`` when even the narrowest width of every layer exceeds the budget.
    """
    widths = _check_bit_list(bits)
    nnz = layer_nonzeros(model)
    mods = quantizable_layers(model)
    books = {n: (mods[n].weight.shape[0] if per_channel else 1) for n in nnz}
    if not nnz:
        raise ConfigError("the model has no quantisable layer (Linear/Conv weight); nothing to allocate.")
    floor = sum(layer_bit_cost(nnz[n], widths[-1], books[n]) for n in nnz)
    if budget_bits < floor:
        raise ConfigError(f"budget of {budget_bits} bits is below the {floor} bits every layer needs at "
                          f"{widths[-1]} bit(s); raise the budget or allow fewer bits.")
    baseline = float(eval_fn(model))
    curves = layer_curves(model, eval_fn, widths, method, per_channel)
    chosen = {name: widths[0] for name in nnz}

    def total() -> int:
        return sum(layer_bit_cost(nnz[n], chosen[n], books[n]) for n in chosen)

    steps = []
    while total() > budget_bits:
        best, best_rate = None, float("inf")
        for name, b in chosen.items():
            lower = [w for w in widths if w < b]
            if not lower:
                continue
            nb = lower[0]
            saved = layer_bit_cost(nnz[name], b, books[name]) - layer_bit_cost(nnz[name], nb, books[name])
            if saved <= 0:
                continue
            # marginal eval increase per bit saved (clamped: a free improvement counts as zero cost)
            rate = max(curves[name][nb] - curves[name][b], 0.0) / saved
            if rate < best_rate:
                best, best_rate = name, rate
        if best is None:
            break
        chosen[best] = [w for w in widths if w < chosen[best]][0]
        steps.append({"layer": best, "bits": chosen[best], "rate": best_rate, "total_bits": total()})
    result = quantize_model(model, chosen, method=method, per_channel=per_channel)
    joint = float(eval_fn(result.model))
    result.evals = {
        "baseline": baseline,
        "budget_bits": int(budget_bits),
        "total_bits": total(),
        "curves": {n: {str(b): v for b, v in c.items()} for n, c in curves.items()},
        "steps": steps,
        "joint": joint,
    }
    log.info("bit allocation: %s (%d of %d bits, joint eval %.6g)", chosen, total(), budget_bits, joint)
    return result


def apply_bits(model: nn.Module, bits: Mapping[str, int], method: str = "kmeans", per_channel: bool = False) -> QuantResult:
    """Alias of :func:`quantize_model` for a bits dict found by a search (reads naturally in recipes)."""
    return quantize_model(model, dict(bits), method=method, per_channel=per_channel)
