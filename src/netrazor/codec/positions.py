"""Where the surviving weights are: four encodings of a flat boolean mask, the smallest wins.

- ``BITMAP``: one raw bit per element (``numpy.packbits``, little bit order).
- ``BITMAP_ANS``: the same bits as an ANS stream over {0, 1} — near ``numel·H(density)``
  for an unstructured (i.i.d.-looking) mask.
- ``GAPS_ANS``: relative indices (Deep Compression's relative-index coding, Han et al. 2016):
  the number of zeros before each survivor, with an escape symbol ``A-1`` meaning "A-1 zeros
  and no survivor yet" so the alphabet ``A`` stays small; ``A`` is chosen per tensor. This is
  run-length coding of the zero runs; runs of survivors are gap-0 symbols, which the entropy
  coder makes almost free, so it also serves structured (row/channel) masks.
- ``ALL`` / ``NONE``: every element survives / none does (nothing stored).

Layout of each payload: docs/nrz-format.md, "Positions".
"""

from __future__ import annotations

import numpy as np

from netrazor.codec.binary import Reader, Writer
from netrazor.codec.entropy import MAX_ALPHABET, decode_stream, encode_stream, quantize_frequencies
from netrazor.errors import FormatError

ALL, NONE, BITMAP, BITMAP_ANS, GAPS_ANS = 0, 1, 2, 3, 4
POSITION_KIND_NAMES = {ALL: "all", NONE: "none", BITMAP: "bitmap", BITMAP_ANS: "bitmap-ans", GAPS_ANS: "gaps-ans"}
GAP_ALPHABETS = tuple(2**k for k in range(1, 13))  # 2 … 4096


def _gaps(mask: np.ndarray) -> np.ndarray:
    return np.diff(np.concatenate(([-1], np.flatnonzero(mask)))) - 1  # zeros before each survivor


def gap_symbols(mask: np.ndarray, alphabet: int, gaps: np.ndarray | None = None) -> np.ndarray:
    """Gap symbols of a flat mask with escape ``alphabet-1`` (see module docstring)."""
    gaps = _gaps(mask) if gaps is None else gaps
    esc = alphabet - 1
    n_esc = gaps // esc
    rem = gaps - n_esc * esc
    # each survivor contributes n_esc escapes then its remainder
    total = int(n_esc.sum()) + gaps.size
    out = np.full(total, esc, dtype=np.int32)
    ends = np.cumsum(n_esc + 1) - 1
    out[ends] = rem
    return out


def _gap_counts(gaps: np.ndarray, alphabet: int) -> np.ndarray:
    """Symbol counts of ``gap_symbols`` without building the stream."""
    esc = alphabet - 1
    n_esc = gaps // esc
    counts = np.bincount(gaps - n_esc * esc, minlength=alphabet).astype(np.int64)
    counts[esc] += int(n_esc.sum())
    return counts


def _entropy_bits(counts: np.ndarray) -> float:
    c = counts[counts > 0].astype(np.float64)
    return float(-(c * np.log2(c / c.sum())).sum()) if c.size else 0.0


def _estimate_stream_bytes(counts: np.ndarray) -> float:
    """Entropy + frequency table + framing: within a few bytes of what encode_stream writes."""
    freqs = quantize_frequencies(counts)
    table = sum(1 if f < 128 else 2 if f < 16384 else 3 for f in freqs.tolist())
    return _entropy_bits(counts) / 8 + table + 12


def gaps_to_mask(symbols: np.ndarray, alphabet: int, numel: int, nnz: int, what: str) -> np.ndarray:
    esc = alphabet - 1
    is_esc = symbols == esc
    if int((~is_esc).sum()) != nnz or (symbols.size and is_esc[-1]):
        raise FormatError(f"{what}: gap stream does not describe {nnz} survivors; the file is corrupt.")
    step = symbols + (~is_esc)  # an escape skips esc zeros; a gap g skips g zeros and one survivor
    pos = np.cumsum(step, dtype=np.int64)[~is_esc] - 1
    if pos.size and pos[-1] >= numel:
        raise FormatError(f"{what}: gap stream points past the tensor's {numel} elements; the file is corrupt.")
    mask = np.zeros(numel, dtype=bool)
    mask[pos] = True
    return mask


def encode_positions(mask: np.ndarray) -> tuple[bytes, int, float, float]:
    """Smallest encoding of a flat mask → ``(payload, kind, stream_bound_bits, mask_entropy_bits)``.

    ``stream_bound_bits`` is the Shannon bound (empirical entropy × count) of the symbol stream
    of the chosen encoding; ``mask_entropy_bits`` is ``numel·H(density)`` (the order-0 bound of
    the mask itself), reported as a reference. The ANS candidates are ranked by an estimate
    (entropy + table) and only the best is actually coded.
    """
    numel, nnz = mask.size, int(mask.sum())
    mask_counts = np.array([numel - nnz, nnz], dtype=np.int64)
    mask_bits = _entropy_bits(mask_counts)
    if nnz == numel:
        return b"", ALL, 0.0, mask_bits
    if nnz == 0:
        return b"", NONE, 0.0, mask_bits
    gaps = _gaps(mask)
    max_gap = int(gaps.max()) + 1
    options: list[tuple[float, int, int, np.ndarray]] = [(_estimate_stream_bytes(mask_counts), BITMAP_ANS, 2, mask_counts)]
    for a in GAP_ALPHABETS:
        counts = _gap_counts(gaps, a)
        options.append((_estimate_stream_bytes(counts) + 2, GAPS_ANS, a, counts))
        if a > max_gap:  # larger alphabets only add unused table entries
            break
    _, kind, alphabet, counts = min(options, key=lambda o: o[0])
    w = Writer()
    if kind == BITMAP_ANS:
        encode_stream(mask.astype(np.int32), 2, w)
    else:
        w.varint(alphabet)
        encode_stream(gap_symbols(mask, alphabet, gaps), alphabet, w)
    bitmap = np.packbits(mask, bitorder="little").tobytes()
    if len(bitmap) <= len(w):
        return bitmap, BITMAP, mask_bits, mask_bits
    return w.getvalue(), kind, _entropy_bits(counts), mask_bits


def decode_positions(r: Reader, kind: int, numel: int, nnz: int) -> np.ndarray:
    """Read a mask payload of ``kind`` for a tensor of ``numel`` elements with ``nnz`` survivors."""
    if kind == ALL:
        if nnz != numel:
            raise FormatError(f"{r.what}: 'all' positions but nnz {nnz} != {numel}; the file is corrupt.")
        return np.ones(numel, dtype=bool)
    if kind == NONE:
        if nnz != 0:
            raise FormatError(f"{r.what}: 'none' positions but nnz {nnz} != 0; the file is corrupt.")
        return np.zeros(numel, dtype=bool)
    if kind == BITMAP:
        raw = r.take((numel + 7) // 8, "positions.bitmap")
        mask = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=numel, bitorder="little").astype(bool)
    elif kind == BITMAP_ANS:
        bits, alphabet = decode_stream(r, numel, "positions.bitmap_ans", max_alphabet=2)
        if bits.size != numel:
            raise FormatError(f"{r.what}: bitmap stream has {bits.size} symbols, expected {numel}; the file is corrupt.")
        mask = bits.astype(bool)
    elif kind == GAPS_ANS:
        alphabet = r.varint("positions.gap_alphabet", MAX_ALPHABET)
        if alphabet < 2:
            raise FormatError(f"{r.what}: gap alphabet {alphabet} < 2; the file is corrupt.")
        syms, stream_alphabet = decode_stream(r, numel, "positions.gaps", max_alphabet=alphabet)
        if syms.size and stream_alphabet > alphabet:
            raise FormatError(f"{r.what}: gap stream alphabet mismatch; the file is corrupt.")
        mask = gaps_to_mask(syms, alphabet, numel, nnz, r.what)
    else:
        raise FormatError(f"{r.what}: unknown positions kind {kind}; the file is corrupt or from a newer netrazor.")
    if int(mask.sum()) != nnz:
        raise FormatError(f"{r.what}: positions hold {int(mask.sum())} survivors, header says {nnz}; the file is corrupt.")
    return mask
