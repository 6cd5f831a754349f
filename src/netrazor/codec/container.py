"""The .nrz container: header, JSON spec, tensor sections, checksums (docs/nrz-format.md).

```
header   28 B  magic "NRZ1" | u16 version | u16 flags (bit 0: spec zlib-compressed, bit 1: against the preset
               dictionary) | u64 file length | u32 spec length
               | u32 tensor count | u32 CRC32 of the previous 24 bytes
spec           spec-length bytes of UTF-8 JSON (an object), zlib'd if flag 0 | u32 CRC32
sections       per tensor: u32 body length | body | u32 CRC32 of body
trailer  32 B  SHA-256 of every byte before it
```

Reading checks, in order: size, magic, version, flags, declared length, SHA-256 (a mismatch
names the first section whose CRC32 fails), then parses each field with bounds checks
(``binary.Reader``) under an element budget of ``max_ratio × file size`` so that no file can
make the decoder allocate out of proportion to its own size. Never pickle, never eval.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import torch

from netrazor.codec.binary import Reader
from netrazor.codec.spec_dictionary import SPEC_DICTIONARY, deflate_with_dictionary
from netrazor.codec.tensors import SectionFacts, decode_tensor, encode_tensor
from netrazor.errors import FormatError

MAGIC = b"NRZ1"
VERSION = 2  # 2 added index-set sections and the dictionary-deflated spec (docs/nrz-format.md "Versions")
READABLE_VERSIONS = (1, 2)
FLAG_SPEC_ZLIB = 1  # the spec bytes are zlib-compressed JSON (written when that is smaller)
FLAG_SPEC_ZDICT = 2  # version 2: ... deflated against spec_dictionary.SPEC_DICTIONARY (needs bit 0)
KNOWN_FLAGS = {1: FLAG_SPEC_ZLIB, 2: FLAG_SPEC_ZLIB | FLAG_SPEC_ZDICT}  # per version; other bits: "newer writer"
HEADER = struct.Struct("<4sHHQII")  # 24 bytes, then its CRC32
HEADER_SIZE = HEADER.size + 4
TRAILER_SIZE = 32
MAX_SPEC_BYTES = 1 << 20
MAX_TENSORS = 1 << 16
MAX_RATIO = 1024  # elements a file may declare per byte of file (float32: 4096× the file size)
MIN_ELEMENT_BUDGET = 1 << 16


def _crc(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_file(spec: dict, tensors: dict[str, torch.Tensor]) -> tuple[bytes, list[SectionFacts], dict]:
    """Serialise ``spec`` and ``tensors`` → ``(file bytes, per-tensor facts, overhead byte counts)``."""
    spec_bytes = json.dumps(spec, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(spec_bytes) > MAX_SPEC_BYTES:
        raise FormatError(f"the architecture spec is {len(spec_bytes)} bytes (max {MAX_SPEC_BYTES}); store less metadata.")
    # the smallest of: plain JSON, deflated, deflated against the preset dictionary
    flags = 0
    for candidate, candidate_flags in ((zlib.compress(spec_bytes, 9), FLAG_SPEC_ZLIB),
                                       (deflate_with_dictionary(spec_bytes), FLAG_SPEC_ZLIB | FLAG_SPEC_ZDICT)):
        if len(candidate) < len(spec_bytes):
            spec_bytes, flags = candidate, candidate_flags
    if len(tensors) > MAX_TENSORS:
        raise FormatError(f"{len(tensors)} tensors exceed the format's {MAX_TENSORS}; split the model.")
    sections, facts = [], []
    for name, tensor in tensors.items():
        body, f = encode_tensor(name, tensor)
        sections.append(struct.pack("<I", len(body)) + body + struct.pack("<I", _crc(body)))
        facts.append(f)
    length = HEADER_SIZE + len(spec_bytes) + 4 + sum(len(s) for s in sections) + TRAILER_SIZE
    head = HEADER.pack(MAGIC, VERSION, flags, length, len(spec_bytes), len(tensors))
    parts = [head, struct.pack("<I", _crc(head)), spec_bytes, struct.pack("<I", _crc(spec_bytes)), *sections]
    data = b"".join(parts)
    data += hashlib.sha256(data).digest()
    assert len(data) == length
    overhead = {"header": HEADER_SIZE, "spec": len(spec_bytes) + 4, "section_framing": 8 * len(sections), "trailer": TRAILER_SIZE}
    return data, facts, overhead


@dataclass
class Layout:
    """Where things are in a file whose framing has been checked."""

    version: int
    flags: int
    spec_bytes: memoryview
    sections: list[tuple[int, int]] = field(default_factory=list)  # (start, end) of each body


def _read_layout(data: bytes, check_sections: bool) -> Layout:
    size = len(data)
    if size < HEADER_SIZE + 4 + TRAILER_SIZE:
        raise FormatError(f"the file is {size} bytes, too short to be .nrz; it is truncated or not an .nrz file.")
    magic, version, flags, length, spec_len, n_tensors = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise FormatError(f"not an .nrz file (magic {bytes(magic)!r}, expected {MAGIC!r}); pass a file written by `netrazor pack`.")
    if version not in READABLE_VERSIONS:
        raise FormatError(f".nrz format version {version} is not supported (this netrazor reads versions "
                          f"{', '.join(map(str, READABLE_VERSIONS))}); upgrade netrazor or re-pack the model.")
    if flags & ~KNOWN_FLAGS[version] or (flags & FLAG_SPEC_ZDICT and not flags & FLAG_SPEC_ZLIB):
        raise FormatError(f"unknown .nrz flags 0x{flags:04x} for version {version}; the file is corrupt or from a newer netrazor.")
    if length != size:
        raise FormatError(f"the file is {size} bytes but its header says {length}; it is truncated or corrupt — re-create it.")
    body_end = size - TRAILER_SIZE
    if hashlib.sha256(memoryview(data)[:body_end]).digest() != bytes(memoryview(data)[body_end:]):
        where = "somewhere"
        try:
            _walk(data, spec_len, n_tensors, body_end, check_crc=True)
        except FormatError as exc:
            where = str(exc)
        raise FormatError(f"SHA-256 checksum mismatch: the file is corrupt ({where}); re-create it with `netrazor pack`.")
    r = Reader(data, 0, body_end, "header")
    r.take(HEADER.size, "header")
    if r.u32("header crc") != _crc(memoryview(data)[: HEADER.size]):
        raise FormatError("header CRC32 mismatch; the file is corrupt — re-create it.")
    return _walk(data, spec_len, n_tensors, body_end, check_crc=check_sections, version=version, flags=flags)


def _walk(data: bytes, spec_len: int, n_tensors: int, body_end: int, check_crc: bool, version: int = VERSION, flags: int = 0) -> Layout:
    mv = memoryview(data)
    r = Reader(data, HEADER_SIZE, body_end, "spec")
    if spec_len > MAX_SPEC_BYTES:
        raise FormatError(f"spec length {spec_len} exceeds {MAX_SPEC_BYTES}; the file is hostile or corrupt.")
    if n_tensors > MAX_TENSORS:
        raise FormatError(f"{n_tensors} tensors exceed the format's {MAX_TENSORS}; the file is hostile or corrupt.")
    spec = r.take(spec_len, "spec")
    if r.u32("spec crc") != _crc(spec) and check_crc:
        raise FormatError("spec CRC32 mismatch: the architecture spec is corrupt")
    layout = Layout(version, flags, spec)
    for i in range(n_tensors):
        r.what = f"section {i}"
        n = r.u32("section length")
        start = r.pos
        body = r.take(n, "section body")
        crc = r.u32("section crc")
        if check_crc and crc != _crc(body):
            raise FormatError(f"section {i} CRC32 mismatch: tensor {i} is corrupt")
        layout.sections.append((start, start + n))
    r.what = "file"
    r.expect_end()
    return layout


def _inflate(raw: bytes, zdict: bytes | None = None) -> bytes:
    """zlib-decompress at most ``MAX_SPEC_BYTES`` (a zip bomb stops there)."""
    d = zlib.decompressobj(zdict=zdict) if zdict is not None else zlib.decompressobj()
    try:
        out = d.decompress(raw, MAX_SPEC_BYTES + 1)
    except zlib.error as exc:
        raise FormatError(f"the compressed architecture spec does not inflate ({exc}); the file is corrupt.") from exc
    if len(out) > MAX_SPEC_BYTES or d.unconsumed_tail:
        raise FormatError(f"the architecture spec inflates beyond {MAX_SPEC_BYTES} bytes; the file is hostile or corrupt.")
    if not d.eof or d.unused_data:
        raise FormatError("the compressed architecture spec is truncated or followed by junk; the file is corrupt.")
    return out


def parse_spec(raw: memoryview, flags: int = 0) -> dict:
    zdict = SPEC_DICTIONARY if flags & FLAG_SPEC_ZDICT else None
    data = _inflate(bytes(raw), zdict) if flags & FLAG_SPEC_ZLIB else bytes(raw)
    try:
        spec = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"the architecture spec is not valid JSON ({exc}); the file is corrupt.") from exc
    if not isinstance(spec, dict):
        raise FormatError("the architecture spec is not a JSON object; the file is corrupt.")
    return spec


def decode_file(data: bytes, max_ratio: int = MAX_RATIO) -> tuple[dict, dict[str, torch.Tensor]]:
    """Parse a whole file → ``(spec, {name: tensor})``; every failure is a ``FormatError``."""
    layout = _read_layout(data, check_sections=True)
    spec = parse_spec(layout.spec_bytes, layout.flags)
    budget = [max(MIN_ELEMENT_BUDGET, max_ratio * len(data))]
    tensors: dict[str, torch.Tensor] = {}
    for i, (start, end) in enumerate(layout.sections):
        name, tensor = decode_tensor(Reader(data, start, end, f"section {i}"), budget, layout.version)
        if name in tensors:
            raise FormatError(f"section {i}: tensor {name!r} appears twice; the file is corrupt.")
        tensors[name] = tensor
    return spec, tensors


def verify_bytes(data: bytes) -> dict[str, Any]:
    """Check framing and every checksum without decoding tensors → ``{version, tensors, bytes}``."""
    layout = _read_layout(data, check_sections=True)
    parse_spec(layout.spec_bytes, layout.flags)
    return {"version": layout.version, "tensors": len(layout.sections), "bytes": len(data)}
