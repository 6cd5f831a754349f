"""One tensor section of an .nrz file: name, dtype, shape, and either raw bytes or sparse coding.

Sparse coding (float32 tensors of rank ≥ 1 with at least ``SMALL`` elements) = positions of the
survivors (``positions.py``) + their values (``values.py``); it is used only when smaller
than the raw bytes, so a section is never larger than raw + its small header. In practice that
is a pruned or quantised weight, or a quantised bias (few distinct values: codebook + indices);
unquantised biases, norms, buffers, small tensors and other dtypes are stored raw, little-endian.

Index-set coding (format version 2; integer vectors that are strictly increasing and ≥ 0, such
as the kept input pixels of a gated first layer, ``fc1.input_index``): the set is the mask of a
vector of ``universe = last + 1`` elements and is coded like survivor positions. LeNet-300's
284 kept pixels took 2,272 raw int64 bytes, a quarter of its file, and about 100 this way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from netrazor.codec.binary import Reader, Writer
from netrazor.codec.positions import POSITION_KIND_NAMES, decode_positions, encode_positions
from netrazor.codec.values import decode_values, encode_values
from netrazor.errors import FormatError

RAW, SPARSE, INDEX_SET = 0, 1, 2
KIND_NAMES = {RAW: "raw", SPARSE: "sparse", INDEX_SET: "index-set"}
FIRST_VERSION_OF_KIND = {RAW: 1, SPARSE: 1, INDEX_SET: 2}
# the writer's cap on an index set's universe (its mask is built in memory): sparse sets of huge
# indices are not worth it and stay raw
MAX_INDEX_UNIVERSE_PER_ELEMENT = 64
SMALL = 16  # fewer elements than this: raw (the coding headers would outweigh any gain)
MAX_NAME = 4096
MAX_NDIM = 8
MAX_DIM = 1 << 40

DTYPES = {
    1: torch.float32, 2: torch.float16, 3: torch.bfloat16, 4: torch.float64,
    5: torch.int64, 6: torch.int32, 7: torch.int16, 8: torch.int8, 9: torch.uint8, 10: torch.bool,
}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}
INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


@dataclass
class SectionFacts:
    """What the report needs about one encoded tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    nnz: int
    kind: str  # "raw" | "sparse" | "index-set"
    position_kind: str | None = None
    value_kind: str | None = None
    levels: int | None = None
    groups: int = 0
    position_bytes: int = 0
    value_bytes: int = 0
    codebook_bytes: int = 0
    position_bound_bits: float = 0.0
    mask_entropy_bits: float = 0.0
    index_bound_bits: float = 0.0
    section_bytes: int = 0


def _header(w: Writer, name: str, tensor: torch.Tensor) -> None:
    raw_name = name.encode("utf-8")
    if len(raw_name) > MAX_NAME or tensor.dim() > MAX_NDIM or tensor.dtype not in DTYPE_CODES:
        raise ValueError(f"tensor {name!r} ({tensor.dtype}, {tensor.dim()} dims) cannot be stored in .nrz")
    w.varint(len(raw_name))
    w.raw(raw_name)
    w.u8(DTYPE_CODES[tensor.dtype])
    w.u8(tensor.dim())
    for d in tensor.shape:
        w.varint(int(d))


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    t = tensor.detach().contiguous().cpu()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def encode_tensor(name: str, tensor: torch.Tensor) -> tuple[bytes, SectionFacts]:
    """The body of one section and the facts about it."""
    tensor = tensor.detach().cpu()
    head = Writer()
    _header(head, name, tensor)
    raw = _raw_bytes(tensor)
    facts = SectionFacts(name, tuple(tensor.shape), str(tensor.dtype).replace("torch.", ""), tensor.numel(),
                         int((tensor != 0).sum()) if tensor.numel() else 0, "raw")
    best = Writer()
    best.u8(RAW)
    best.raw(raw)
    if tensor.dtype == torch.float32 and tensor.dim() >= 1 and tensor.numel() >= SMALL:
        flat = tensor.reshape(-1)
        mask = (flat != 0).numpy()
        w = Writer()
        w.u8(SPARSE)
        w.varint(int(mask.sum()))
        payload, pos_kind, pos_bound, mask_bits = encode_positions(mask)
        w.u8(pos_kind)
        w.raw(payload)
        pos_len = len(w)
        idx = torch.from_numpy(np.flatnonzero(mask))
        rows = tensor.shape[0]
        row_of = idx // (tensor.numel() // rows)
        # a vector has no output channels to give codebooks to: one codebook (or raw floats)
        vfacts = encode_values(flat[idx], row_of if tensor.dim() >= 2 else None, rows, w)
        if len(w) < len(best):
            best = w
            facts.kind = "sparse"
            facts.position_kind = POSITION_KIND_NAMES[pos_kind]
            facts.position_bytes = len(payload)
            facts.value_bytes = len(w) - pos_len
            facts.value_kind = vfacts["value_kind"]
            facts.levels = vfacts["levels"]
            facts.groups = vfacts["groups"]
            facts.codebook_bytes = vfacts["codebook_bytes"]
            facts.position_bound_bits = pos_bound
            facts.mask_entropy_bits = mask_bits
            facts.index_bound_bits = vfacts["index_bound_bits"]
    index_set = _encode_index_set(tensor)
    if index_set is not None and len(index_set[0]) < len(best):
        payload, pos_kind, pos_bound, mask_bits = index_set
        best = Writer()
        best.raw(payload)
        facts.kind = "index-set"
        facts.position_kind = POSITION_KIND_NAMES[pos_kind]
        facts.position_bytes = len(payload)
        facts.position_bound_bits = pos_bound
        facts.mask_entropy_bits = mask_bits
    if facts.kind == "raw":
        facts.value_bytes = len(raw)
    body = head.getvalue() + best.getvalue()
    facts.section_bytes = len(body)
    return body, facts


def _encode_index_set(tensor: torch.Tensor) -> tuple[bytes, int, float, float] | None:
    """``(kind byte + universe + positions payload, positions kind, bound bits, mask bits)`` of a
    strictly increasing non-negative integer vector, or None when the tensor is not one."""
    if tensor.dtype not in INT_DTYPES or tensor.dim() != 1 or tensor.numel() == 0:
        return None
    values = tensor.to(torch.int64).numpy()
    if values[0] < 0 or (values.size > 1 and not bool((np.diff(values) > 0).all())):
        return None
    universe = int(values[-1]) + 1
    if universe > MAX_INDEX_UNIVERSE_PER_ELEMENT * values.size + 1024:
        return None
    mask = np.zeros(universe, dtype=bool)
    mask[values] = True
    payload, pos_kind, pos_bound, mask_bits = encode_positions(mask)
    w = Writer()
    w.u8(INDEX_SET)
    w.varint(universe)
    w.u8(pos_kind)
    w.raw(payload)
    return w.getvalue(), pos_kind, pos_bound, mask_bits


def _decode_index_set(r: Reader, dtype: torch.dtype, numel: int, budget: list[int]) -> torch.Tensor:
    universe = r.varint("index_set.universe", MAX_DIM)
    if universe < numel or numel == 0:
        raise FormatError(f"{r.what}: an index set of {numel} values in a universe of {universe}; the file is corrupt.")
    if universe - 1 > torch.iinfo(dtype).max:
        raise FormatError(f"{r.what}: index {universe - 1} does not fit {dtype}; the file is corrupt.")
    # the mask of the universe is allocated below: it counts against the same element budget
    if universe > budget[0]:
        raise FormatError(f"{r.what}: an index universe of {universe} elements exceeds what this file's size allows "
                          f"({budget[0]} left); the file is hostile or corrupt.")
    budget[0] -= universe
    pos_kind = r.u8("index_set.positions.kind")
    mask = decode_positions(r, pos_kind, universe, numel)
    r.expect_end()
    return torch.from_numpy(np.flatnonzero(mask)).to(dtype)


def decode_tensor(r: Reader, budget: list[int], version: int = 2) -> tuple[str, torch.Tensor]:
    """Read one section body. ``budget[0]`` is the number of elements the file may still declare;
    it shrinks by each tensor's element count *before* anything of that size is allocated.
    ``version``: the file's format version (a section kind newer than the file is corruption)."""
    name_len = r.varint("name_len", MAX_NAME)
    try:
        name = bytes(r.take(name_len, "name")).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{r.what}: tensor name is not UTF-8; the file is corrupt.") from exc
    r.what = f"{r.what} tensor {name!r}"
    code = r.u8("dtype")
    if code not in DTYPES:
        raise FormatError(f"{r.what}: unknown dtype code {code}; the file is corrupt or from a newer netrazor.")
    dtype = DTYPES[code]
    ndim = r.u8("ndim")
    if ndim > MAX_NDIM:
        raise FormatError(f"{r.what}: {ndim} dimensions (max {MAX_NDIM}); the file is corrupt.")
    shape = tuple(r.varint("dim", MAX_DIM) for _ in range(ndim))
    numel = math.prod(shape)
    if numel > budget[0]:
        raise FormatError(
            f"{r.what}: shape {list(shape)} declares {numel} elements, more than this file's size allows "
            f"({budget[0]} left); the file is hostile or corrupt. If it is genuine, raise max_ratio in unpack()."
        )
    budget[0] -= numel
    kind = r.u8("kind")
    if kind in FIRST_VERSION_OF_KIND and FIRST_VERSION_OF_KIND[kind] > version:
        raise FormatError(f"{r.what}: section kind {kind} does not exist in format version {version}; the file is corrupt.")
    itemsize = torch.empty(0, dtype=dtype).element_size()
    if kind == RAW:
        raw = r.take(numel * itemsize, "raw data")
        r.expect_end()
        if numel == 0:
            return name, torch.empty(shape, dtype=dtype)
        flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype)
        return name, flat.reshape(shape).clone()
    if kind == INDEX_SET:
        if dtype not in INT_DTYPES or ndim != 1:
            raise FormatError(f"{r.what}: index-set coding of a {dtype} tensor of shape {list(shape)}; the file is corrupt.")
        return name, _decode_index_set(r, dtype, numel, budget)
    if kind != SPARSE:
        raise FormatError(f"{r.what}: unknown section kind {kind}; the file is corrupt or from a newer netrazor.")
    if dtype != torch.float32 or ndim < 1 or numel == 0:
        raise FormatError(f"{r.what}: sparse coding of a {dtype} tensor of shape {list(shape)}; the file is corrupt.")
    nnz = r.varint("nnz", numel)
    pos_kind = r.u8("positions.kind")
    mask = decode_positions(r, pos_kind, numel, nnz)
    rows = shape[0]
    idx = np.flatnonzero(mask)
    values = decode_values(r, nnz, rows, lambda: idx // (numel // rows), version)
    r.expect_end()
    out = np.zeros(numel, dtype=np.float32)
    out[idx] = values
    return name, torch.from_numpy(out).reshape(shape)
