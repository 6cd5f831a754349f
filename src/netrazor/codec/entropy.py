"""Entropy-coded symbol streams: constriction's ANS with a stored, quantised categorical model.

A stream is i.i.d. symbols from ``{0 … alphabet-1}``. Its model is the empirical
distribution quantised to integer frequencies summing to ``2**PRECISION`` and stored in
the file (varints), so encoder and decoder build the very same
``constriction.stream.model.Categorical(freqs, perfect=False)`` and decoding is exact.
The compressed words come from ``constriction.stream.stack.AnsCoder`` (Duda's ANS;
constriction by Bamler, 2022).

Stream layout (docs/nrz-format.md, "ANS stream"):
``varint count``; if count > 0: ``varint alphabet``, ``alphabet × varint freq``;
``varint n_words``, ``n_words × u32`` (empty when a single symbol has all the mass).
"""

from __future__ import annotations

import numpy as np

from netrazor.codec.binary import Reader, Writer
from netrazor.errors import FormatError

PRECISION = 16  # frequencies sum to 2**16; constriction rescales them to its own 24-bit precision
MAX_ALPHABET = 4096


def empirical_entropy_bits(symbols: np.ndarray) -> float:
    """Shannon bound of a stream under its own order-0 model: ``count × H(empirical)`` in bits."""
    if symbols.size == 0:
        return 0.0
    counts = np.bincount(symbols.astype(np.int64))
    counts = counts[counts > 0].astype(np.float64)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())


def quantize_frequencies(counts: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Integer frequencies ≥ 1 for every used symbol, 0 for unused ones, summing to ``2**precision``."""
    total = 1 << precision
    used = counts > 0
    if used.sum() > total:
        raise ValueError("alphabet too large for the frequency precision")
    freqs = np.zeros(counts.shape, dtype=np.int64)
    freqs[used] = np.maximum(1, np.round(counts[used] / counts.sum() * total)).astype(np.int64)
    diff = total - int(freqs.sum())
    # settle the rounding remainder on the most frequent symbols (smallest relative change)
    order = np.argsort(-freqs, kind="stable")
    i = 0
    while diff != 0:
        j = order[i % int(used.sum())]
        step = 1 if diff > 0 else -1
        if freqs[j] + step >= 1:
            freqs[j] += step
            diff -= step
        i += 1
    return freqs


def _model(freqs: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(freqs.astype(np.float64), perfect=False)


def encode_stream(symbols: np.ndarray, alphabet: int, w: Writer) -> None:
    """Append one ANS stream of ``symbols`` (ints in ``[0, alphabet)``) to ``w``."""
    import constriction

    symbols = np.ascontiguousarray(symbols, dtype=np.int32)
    w.varint(int(symbols.size))
    if symbols.size == 0:
        return
    if not 1 <= alphabet <= MAX_ALPHABET:
        raise ValueError(f"alphabet {alphabet} out of range")
    counts = np.bincount(symbols, minlength=alphabet)
    freqs = quantize_frequencies(counts)
    w.varint(alphabet)
    for f in freqs:
        w.varint(int(f))
    if int((freqs > 0).sum()) == 1:
        w.varint(0)  # a constant stream: the model alone determines it
        return
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols, _model(freqs))
    words = coder.get_compressed().astype("<u4")
    w.varint(int(words.size))
    w.raw(words.tobytes())


def stream_size(symbols: np.ndarray, alphabet: int) -> int:
    """Bytes ``encode_stream`` would write."""
    w = Writer()
    encode_stream(symbols, alphabet, w)
    return len(w)


def decode_stream(r: Reader, max_count: int, field: str, max_alphabet: int = MAX_ALPHABET) -> tuple[np.ndarray, int]:
    """Read one stream; returns ``(symbols int32, alphabet)``. ``max_count`` bounds the symbol count
    (the caller derives it from the tensor's shape, itself capped by the file size)."""
    import constriction

    count = r.varint(f"{field}.count", max_count)
    if count == 0:
        return np.zeros(0, dtype=np.int32), 0
    alphabet = r.varint(f"{field}.alphabet", max_alphabet)
    if alphabet < 1:
        raise FormatError(f"{r.what}: field '{field}.alphabet' is 0; the file is corrupt.")
    r.need(alphabet, f"{field}.freqs")  # each varint takes at least one byte: check before allocating
    total = 1 << PRECISION
    freqs = np.fromiter((r.varint(f"{field}.freq", total) for _ in range(alphabet)), dtype=np.int64, count=alphabet)
    if int(freqs.sum()) != total:
        raise FormatError(f"{r.what}: frequencies of '{field}' sum to {int(freqs.sum())}, not {total}; the file is corrupt.")
    n_words = r.varint(f"{field}.n_words", r.remaining // 4)
    raw = r.take(4 * n_words, f"{field}.words")
    used = np.flatnonzero(freqs)
    if used.size == 1:
        if n_words:
            raise FormatError(f"{r.what}: constant stream '{field}' carries data; the file is corrupt.")
        return np.full(count, int(used[0]), dtype=np.int32), alphabet
    if n_words == 0:
        raise FormatError(f"{r.what}: stream '{field}' has no data; the file is truncated or corrupt.")
    words = np.frombuffer(raw, dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        symbols = coder.decode(_model(freqs), count)
        if not coder.is_empty():
            raise FormatError(f"{r.what}: stream '{field}' has data left after {count} symbols; the file is corrupt.")
    except FormatError:
        raise
    except Exception as exc:  # constriction rejects malformed data with ValueError
        raise FormatError(f"{r.what}: stream '{field}' does not decode ({exc}); the file is corrupt.") from exc
    symbols = symbols.astype(np.int32, copy=False)  # alphabet ≤ 4096: int32 halves the decoder's memory
    if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet or not freqs[symbols].all()):
        raise FormatError(f"{r.what}: stream '{field}' decodes to symbols its model forbids; the file is corrupt.")
    return symbols, alphabet
