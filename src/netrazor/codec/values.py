"""The values of the surviving weights: a codebook plus entropy-coded indices, or raw float32.

The codec is lossless on whatever tensor it is given: a quantised layer holds few distinct
values, so its survivors are found exactly as ``codebook[index]`` (``torch.unique``, sorted);
the codebook is stored as float32 — or as float16 (format version 2) when every level is exactly
a float16 value, as ``netrazor.quant``'s k-means levels are — and the indices as an ANS stream. A per-output-channel
quantised layer (different levels per row) gets one codebook per row. Anything with more
distinct values than ``max_levels`` (an unquantised layer) is stored as raw float32.
"""

from __future__ import annotations

import numpy as np
import torch

from netrazor.codec.binary import Reader, Writer
from netrazor.codec.entropy import MAX_ALPHABET, decode_stream, empirical_entropy_bits, encode_stream
from netrazor.errors import FormatError

RAW_F32, CODEBOOK, CODEBOOK16 = 0, 1, 2
VALUE_KIND_NAMES = {RAW_F32: "raw-f32", CODEBOOK: "codebook-ans", CODEBOOK16: "codebook16-ans"}
FIRST_VERSION_OF_VALUE_KIND = {RAW_F32: 1, CODEBOOK: 1, CODEBOOK16: 2}
MAX_LEVELS = 256


def per_tensor_codebook(vals: torch.Tensor, max_levels: int):
    uniq, inv = torch.unique(vals, sorted=True, return_inverse=True)
    if uniq.numel() > max_levels:
        return None
    return uniq.reshape(1, -1), inv


def per_row_codebook(vals: torch.Tensor, row_of: torch.Tensor, rows: int, max_levels: int):
    """One sorted codebook per row, padded to the longest with its last level (unused)."""
    books, inv = [], torch.empty(vals.shape, dtype=torch.int64)
    for r in range(rows):
        sel = row_of == r
        if not bool(sel.any()):
            books.append(torch.zeros(0))
            continue
        uniq, rinv = torch.unique(vals[sel], sorted=True, return_inverse=True)
        if uniq.numel() > max_levels:
            return None
        books.append(uniq)
        inv[sel] = rinv
    k = max(1, max(b.numel() for b in books))
    table = torch.ones(rows, k)
    for r, b in enumerate(books):
        if b.numel():
            table[r, : b.numel()] = b
            table[r, b.numel() :] = b[-1]
    return table, inv


def encode_values(vals: torch.Tensor, row_of: torch.Tensor | None, rows: int, w: Writer, max_levels: int = MAX_LEVELS) -> dict:
    """Append the values payload; returns facts for the report (kind, levels, groups, bound)."""
    vals = vals.float()
    found = None
    if vals.numel() and bool(torch.isfinite(vals).all()):
        found = per_tensor_codebook(vals, max_levels)
        if found is None and row_of is not None and rows > 1:
            found = per_row_codebook(vals, row_of, rows, max_levels)
    if found is None:
        w.u8(RAW_F32)
        w.raw(vals.numpy().astype("<f4").tobytes())
        return {"value_kind": "raw-f32", "levels": None, "groups": 0, "index_bound_bits": 0.0, "codebook_bytes": 0}
    table, inv = found
    groups, levels = table.shape
    # float16 when that is exact (float32 -> float16 -> float32 gives back every level bit for bit)
    half = table.numpy().astype("<f2")
    exact16 = bool(np.isfinite(half).all()) and np.array_equal(half.astype(np.float32).view(np.uint32),
                                                                table.numpy().astype(np.float32).view(np.uint32))
    kind = CODEBOOK16 if exact16 else CODEBOOK
    w.u8(kind)
    w.varint(groups)
    w.varint(levels)
    book = half.tobytes() if exact16 else table.numpy().astype("<f4").tobytes()
    w.raw(book)
    symbols = inv.numpy().astype(np.int32)
    encode_stream(symbols, levels, w)
    return {
        "value_kind": VALUE_KIND_NAMES[kind],
        "levels": int(levels),
        "groups": int(groups),
        "index_bound_bits": empirical_entropy_bits(symbols),
        "codebook_bytes": len(book),
    }


def decode_values(r: Reader, nnz: int, rows: int, row_of, version: int = 2) -> np.ndarray:
    """Read a values payload for ``nnz`` survivors; ``row_of()`` lazily gives each survivor's row."""
    kind = r.u8("values.kind")
    if FIRST_VERSION_OF_VALUE_KIND.get(kind, 0) > version:
        raise FormatError(f"{r.what}: values kind {kind} does not exist in format version {version}; the file is corrupt.")
    if kind == RAW_F32:
        raw = r.take(4 * nnz, "values.raw")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if kind not in (CODEBOOK, CODEBOOK16):
        raise FormatError(f"{r.what}: unknown values kind {kind}; the file is corrupt or from a newer netrazor.")
    groups = r.varint("values.groups", max(rows, 1))
    if groups not in (1, rows):
        raise FormatError(f"{r.what}: {groups} codebooks for a tensor of {rows} rows; the file is corrupt.")
    levels = r.varint("values.levels", MAX_ALPHABET)
    if levels < 1:
        raise FormatError(f"{r.what}: empty codebook; the file is corrupt.")
    itemsize, dtype = (2, "<f2") if kind == CODEBOOK16 else (4, "<f4")
    book = r.take(itemsize * groups * levels, "values.codebook")
    table = np.frombuffer(book, dtype=dtype).astype(np.float32).reshape(groups, levels)
    symbols, _ = decode_stream(r, nnz, "values.indices", max_alphabet=levels)
    if symbols.size != nnz:
        raise FormatError(f"{r.what}: {symbols.size} indices for {nnz} survivors; the file is corrupt.")
    if nnz and symbols.max() >= levels:
        raise FormatError(f"{r.what}: index beyond the codebook; the file is corrupt.")
    group = row_of() if groups > 1 else np.zeros(nnz, dtype=np.int64)
    return table[group, symbols]
