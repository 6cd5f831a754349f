"""Quantisers for the *surviving* (non-zero) weights of one tensor.

Pruned positions are the zero level: they are never quantised and stay exactly
zero, and a surviving weight never collapses to zero (every level is non-zero),
so quantisation does not change the sparsity pattern the codec encodes.

- ``quantize_uniform``: symmetric mid-rise levels, the odd multiples of ``scale``
  (``±scale, ±3·scale, …``: 2^b levels, none at zero), per tensor or per output channel
  (dim 0). With 1 bit this is ``sign(w)·scale``. ``scale`` minimises the squared error over
  a grid that includes the mean |w| (the L2-optimal scale of a sign quantiser, as in
  XNOR-Net). [REC] — the level placement and the grid search are ours.
- ``quantize_kmeans``: non-uniform, 2^b centroids fitted by Lloyd iterations on the
  survivors (Deep Compression's weight sharing, Han et al. 2016), deterministic linear
  (or quantile) initialisation. Vectorised in torch: one ``bucketize`` per iteration
  over the sorted centroids (1-D nearest neighbour = midpoint boundaries). The fitted levels are
  rounded to float16 (``level_dtype``, [REC] ours): the codec then stores 2 bytes per level
  instead of 4 (on a pruned LeNet-5 the codebooks were ~5 % of the file) and the rounding moves
  a level by at most 2^-11 of its value, far below the spacing of 2^b levels.

Every quantiser returns a :class:`Quantized`: integer indices (−1 at pruned positions),
the codebook (levels), the scale (uniform only) and the dequantised tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from netrazor.errors import ConfigError

MIN_BITS, MAX_BITS = 1, 8


@dataclass
class Quantized:
    """The result of quantising one tensor.

    indices:     int64, same shape as the input; −1 at pruned (zero) positions, else the level index.
    codebook:    float32 ``[K]`` (per tensor) or ``[C, K]`` (per output channel); never contains 0.
    scale:       float32 scalar or ``[C]`` (uniform) / ``None`` (k-means).
    dequantized: the tensor the model runs with: ``codebook[idx]`` at survivors, exact 0 elsewhere.
    """

    indices: torch.Tensor
    codebook: torch.Tensor
    scale: torch.Tensor | None
    dequantized: torch.Tensor
    bits: int
    method: str
    per_channel: bool = False

    @property
    def mask(self) -> torch.Tensor:
        return self.indices >= 0


def _check_bits(bits: int) -> int:
    if not isinstance(bits, int) or isinstance(bits, bool) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"bits={bits!r} is not supported; choose an integer from {MIN_BITS} to {MAX_BITS}.")
    return bits


def _check_tensor(w: torch.Tensor) -> torch.Tensor:
    if not torch.is_floating_point(w):
        raise ConfigError(f"can only quantise floating-point tensors, got {w.dtype}; pass a weight tensor.")
    if not torch.isfinite(w).all():
        raise ConfigError("the tensor holds NaN or inf; fix the model (retrain or reload) before quantising.")
    return w.detach().float()


def _dequantize(indices: torch.Tensor, codebook: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``codebook[idx]`` at survivors, exact zero elsewhere (per-tensor or per-row codebook)."""
    safe = indices.clamp_min(0)
    if codebook.dim() == 1:
        values = codebook[safe]
    else:
        rows = codebook.shape[0]
        flat = safe.reshape(rows, -1)
        values = torch.gather(codebook, 1, flat).reshape(indices.shape)
    out = torch.where(indices >= 0, values, torch.zeros((), dtype=values.dtype))
    return out.to(like.dtype)


def uniform_levels(scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric mid-rise levels: the odd multiples ``(2k - 2^b + 1)·scale``, k = 0..2^b-1.

    ``scale`` has shape ``[]`` or ``[C]`` → levels ``[K]`` or ``[C, K]``. With 1 bit: ``±scale``.
    """
    odd = (2 * torch.arange(2**bits, dtype=torch.float32) - 2**bits + 1)
    scale = scale.float()
    return scale.unsqueeze(-1) * odd if scale.dim() else scale * odd


def _uniform_index(rows: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Nearest level index for each entry of ``rows`` ``[R, N]`` given per-row ``scale`` ``[R]``."""
    k = torch.floor(rows / (2 * scale.unsqueeze(1))).to(torch.int64) + 2 ** (bits - 1)
    return k.clamp_(0, 2**bits - 1)


def _best_uniform_scale(rows: torch.Tensor, rmask: torch.Tensor, bits: int, steps_per_octave: int) -> torch.Tensor:
    """Per-row scale minimising the squared error of the survivors, over a grid.

    Candidates: ``max|w|·2^(-j/steps)`` for j = 0..steps·(b+1), the mean |w| (the exact optimum
    of the 1-bit sign quantiser) and the smallest |w| (makes re-quantisation idempotent). The grid for b+1 bits contains the grid for b bits, and the
    (b+1)-bit levels at a scale contain the b-bit levels, so the error never grows with bits.
    """
    absr = rows.abs()
    count = rmask.sum(1).clamp_min(1)
    top = absr.amax(1)
    top = torch.where(top > 0, top, torch.ones_like(top))
    mean = torch.where(rmask.any(1), absr.sum(1) / count, top)
    # the smallest survivor: when the weights already sit on a level grid that uses ±scale, this
    # candidate reproduces them exactly, so re-quantising a quantised tensor changes nothing
    smallest = torch.where(rmask, absr, torch.full_like(absr, float("inf"))).amin(1)
    smallest = torch.where(torch.isfinite(smallest), smallest, top)
    ratios = torch.pow(2.0, -torch.arange(steps_per_octave * (bits + 1) + 1, dtype=torch.float32) / steps_per_octave)
    candidates = [mean, smallest] + [top * r for r in ratios]
    best = candidates[0]
    best_err = torch.full_like(top, float("inf"))
    for cand in candidates:
        levels = uniform_levels(cand, bits)  # [R, K]
        values = torch.gather(levels, 1, _uniform_index(rows, cand, bits))
        err = ((values - rows) ** 2 * rmask).sum(1)
        better = err < best_err
        best = torch.where(better, cand, best)
        best_err = torch.where(better, err, best_err)
    return best


def quantize_uniform(w: torch.Tensor, bits: int, per_channel: bool = False, steps_per_octave: int = 16) -> Quantized:
    """Uniform symmetric quantisation of the non-zero entries of ``w`` (see module docstring).

    Levels are the odd multiples of ``scale`` (2^b of them, none at zero); ``scale`` is chosen per
    tensor (or per output channel = dim 0 with ``per_channel``) to minimise the squared error over a
    grid of ``steps_per_octave`` candidates per octave below max|w|, plus mean|w| (the 1-bit optimum).
    Knobs: ``bits`` (1–8), ``per_channel``, ``steps_per_octave``. [REC] grid search is our choice.
    """
    bits = _check_bits(bits)
    x = _check_tensor(w)
    mask = x != 0
    rows = x.reshape(x.shape[0], -1) if (per_channel and x.dim() >= 1) else x.reshape(1, -1)
    rmask = mask.reshape(rows.shape)
    scale = _best_uniform_scale(rows, rmask, bits, steps_per_octave)
    levels = uniform_levels(scale, bits)  # [R, K]
    k = _uniform_index(rows, scale, bits)
    idx = torch.where(rmask, k, torch.full_like(k, -1)).reshape(x.shape)
    if per_channel:
        codebook, scale_out = levels, scale
    else:
        codebook, scale_out = levels[0], scale[0]
    deq = _dequantize(idx, codebook, w)
    return Quantized(idx, codebook, scale_out, deq, bits, "uniform", per_channel)


def _lloyd(values: torch.Tensor, centroids: torch.Tensor, iters: int, tol: float) -> torch.Tensor:
    """1-D Lloyd iterations: assign by midpoint boundaries, move each centroid to its members' mean."""
    k = centroids.numel()
    for _ in range(iters):
        centroids, _ = torch.sort(centroids)
        bounds = (centroids[1:] + centroids[:-1]) / 2
        assign = torch.bucketize(values, bounds)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, assign, values.double())
        counts = torch.bincount(assign, minlength=k).double()
        # an empty cluster keeps its centroid (deterministic; no random re-seeding)
        new = torch.where(counts > 0, sums / counts.clamp_min(1), centroids.double()).float()
        shift = (new - centroids).abs().max().item()
        centroids = new
        if shift <= tol:
            break
    return torch.sort(centroids)[0]


LEVEL_DTYPES = ("float16", "float32")
FP16_MAX = 65504.0


def half_levels(levels: torch.Tensor) -> torch.Tensor:
    """``levels`` rounded to the nearest float16 values (sorted, duplicates merged, none zero).

    A level that would underflow to 0 becomes the smallest float16 of its sign (0 means pruned);
    levels beyond float16's range are returned unchanged (float32), as the codec would store them.
    """
    if levels.numel() == 0 or float(levels.abs().max()) > FP16_MAX:
        return levels
    rounded = levels.half().float()
    rounded = torch.where(rounded == 0, torch.copysign(torch.tensor(2.0**-24), levels), rounded)
    return torch.unique(rounded)


def kmeans_codebook(values: torch.Tensor, bits: int, init: str | torch.Tensor = "linear", iters: int = 30, tol: float = 0.0,
                    level_dtype: str = "float16") -> torch.Tensor:
    """Fit ``min(2^bits, #distinct)`` centroids to the 1-D ``values`` (none of them zero).

    ``init``: "linear" (evenly between min and max; Han et al. found it best for accuracy
    because it keeps the rare large weights), "quantile", or a tensor of starting centroids.
    ``level_dtype``: "float16" rounds the fitted centroids to float16 values (see module doc; a
    merge of two rounded levels leaves fewer than 2^bits), "float32" keeps them. Values that already
    have at most 2^bits distinct entries are returned exactly, whatever ``level_dtype``.
    """
    if level_dtype not in LEVEL_DTYPES:
        raise ConfigError(f"level_dtype={level_dtype!r} is not supported; use one of {LEVEL_DTYPES}.")
    k = 2**bits
    distinct = torch.unique(values)
    if distinct.numel() <= k:
        return distinct.float()  # exact: every value is its own centroid
    if isinstance(init, torch.Tensor):
        start = init.detach().float().flatten().clone()
        if start.numel() != k:
            raise ConfigError(f"init codebook has {start.numel()} centroids, expected {k}; pass 2^bits values.")
    elif init == "linear":
        start = torch.linspace(values.min().item(), values.max().item(), k)
    elif init == "quantile":
        start = torch.quantile(values.double(), torch.linspace(0, 1, k, dtype=torch.float64)).float()
    else:
        raise ConfigError(f"unknown k-means init {init!r}; use 'linear', 'quantile' or a tensor.")
    centroids = _lloyd(values.float(), start, iters, tol)
    # a centroid must never be exactly zero (zero means "pruned"); nudge it to the nearest float
    zero = centroids == 0
    if zero.any():
        centroids = torch.where(zero, torch.full_like(centroids, torch.finfo(torch.float32).tiny), centroids)
    return half_levels(centroids) if level_dtype == "float16" else centroids


def quantize_kmeans(
    w: torch.Tensor,
    bits: int,
    *,
    init: str | torch.Tensor = "linear",
    iters: int = 30,
    tol: float = 0.0,
    level_dtype: str = "float16",
) -> Quantized:
    """Non-uniform k-means quantisation of the non-zero entries of ``w`` (2^bits centroids).

    Knobs: ``bits`` (1–8), ``init`` ("linear" | "quantile" | tensor), ``iters`` (Lloyd steps), ``tol``
    (stop when no centroid moves more than this), ``level_dtype`` ("float16" | "float32": the
    precision of the levels). Deterministic: no random initialisation.
    """
    bits = _check_bits(bits)
    x = _check_tensor(w)
    mask = x != 0
    survivors = x[mask]
    if survivors.numel() == 0:
        codebook = torch.ones(1, dtype=torch.float32)
        idx = torch.full(x.shape, -1, dtype=torch.int64)
        return Quantized(idx, codebook, None, torch.zeros_like(w), bits, "kmeans")
    codebook = kmeans_codebook(survivors, bits, init=init, iters=iters, tol=tol, level_dtype=level_dtype)
    bounds = (codebook[1:] + codebook[:-1]) / 2
    idx = torch.full(x.shape, -1, dtype=torch.int64)
    idx[mask] = torch.bucketize(survivors, bounds)
    deq = _dequantize(idx, codebook, w)
    return Quantized(idx, codebook, None, deq, bits, "kmeans")


def quantize_tensor(w: torch.Tensor, bits: int, method: str = "kmeans", per_channel: bool = False, **kw) -> Quantized:
    """Dispatch on ``method`` ("kmeans" | "uniform")."""
    if method == "kmeans":
        if per_channel:
            raise ConfigError("per-channel k-means is not supported; use method='uniform' for per-channel, or per_channel=False.")
        return quantize_kmeans(w, bits, **kw)
    if method == "uniform":
        return quantize_uniform(w, bits, per_channel=per_channel)
    raise ConfigError(f"unknown quantisation method {method!r}; use 'kmeans' or 'uniform'.")
