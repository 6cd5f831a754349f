"""A damaged or hostile .nrz raises FormatError — never another error, a hang or a huge allocation."""

from __future__ import annotations

import hashlib
import struct
import tracemalloc
import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from netrazor.codec import decode_file, encode_file
from netrazor.codec.binary import Writer
from netrazor.codec.container import HEADER, HEADER_SIZE, MAGIC
from netrazor.errors import FormatError
from netrazor.quant import quantize_model


def _sample_file() -> bytes:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 10))
    with torch.no_grad():
        for m in (model[0], model[2]):
            m.weight.mul_((torch.rand(m.weight.shape, generator=g) < 0.15).float())
    q = quantize_model(model, {"0": 3, "2": 2}, method="uniform", per_channel=True)
    state = q.model.state_dict()
    structured = torch.randn(32, 64, generator=g)
    structured[::3] = 0
    state["structured"] = quantize_model(nn.Sequential(nn.Linear(64, 32)), 2).model[0].weight.detach() * (structured != 0)
    state["counter"] = torch.tensor(5)
    state["0.bias"] = quantize_model(model, 3, bias_bits=2).model[0].bias.detach()  # rank-1 codebook section
    state["input_index"] = torch.sort(torch.randperm(300, generator=g)[:90])[0]  # version-2 index-set section
    data, facts, _ = encode_file({"format": "netrazor.nrz", "model": None}, state)
    kinds = {f.position_kind for f in facts if f.kind == "sparse"}
    assert {"gaps-ans"} & kinds or {"bitmap-ans"} & kinds
    by_name = {f.name: f.kind for f in facts}
    assert by_name["0.bias"] == "sparse" and by_name["input_index"] == "index-set"
    assert struct.unpack_from("<H", data, 6)[0] & 2  # the spec went through the preset dictionary
    return data


SAMPLE = _sample_file()


def reseal(data: bytes) -> bytes:
    """Recompute every checksum of a (possibly mutated) file, so the parser itself is exercised."""
    buf = bytearray(data)
    if len(buf) < HEADER_SIZE + 36:
        return bytes(buf)
    buf[8:16] = struct.pack("<Q", len(buf))
    buf[24:28] = struct.pack("<I", zlib.crc32(bytes(buf[:24])))
    spec_len, n = struct.unpack_from("<II", buf, 16)
    pos, end = HEADER_SIZE, len(buf) - 32
    if pos + spec_len + 4 <= end:
        buf[pos + spec_len : pos + spec_len + 4] = struct.pack("<I", zlib.crc32(bytes(buf[pos : pos + spec_len])))
        pos += spec_len + 4
        for _ in range(min(n, 1000)):
            if pos + 4 > end:
                break
            (length,) = struct.unpack_from("<I", buf, pos)
            if pos + 8 + length > end:
                break
            body = bytes(buf[pos + 4 : pos + 4 + length])
            buf[pos + 4 + length : pos + 8 + length] = struct.pack("<I", zlib.crc32(body))
            pos += 8 + length
    buf[-32:] = hashlib.sha256(bytes(buf[:-32])).digest()
    return bytes(buf)


def _decode_or_format_error(data: bytes) -> None:
    try:
        decode_file(data)
    except FormatError as exc:
        assert str(exc)  # a message, never an empty error


def test_sample_decodes_and_reseal_is_identity():
    assert reseal(SAMPLE) == SAMPLE
    spec, tensors = decode_file(SAMPLE)
    assert spec["format"] == "netrazor.nrz" and "structured" in tensors


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0, len(SAMPLE) - 1))
def test_any_truncation_is_a_format_error(cut):
    with pytest.raises(FormatError):
        decode_file(SAMPLE[:cut])


@settings(max_examples=150, deadline=2000)
@given(flips=st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(1, 255)), min_size=1, max_size=8, unique_by=lambda t: t[0]))
def test_byte_flips_are_caught_by_checksums(flips):
    buf = bytearray(SAMPLE)
    for pos, x in flips:
        buf[pos] ^= x
    with pytest.raises(FormatError):
        decode_file(bytes(buf))


@settings(max_examples=300, deadline=2000)
@given(flips=st.lists(st.tuples(st.integers(0, len(SAMPLE) - 33), st.integers(1, 255)), min_size=1, max_size=6))
def test_byte_flips_with_valid_checksums_decode_or_raise_format_error(flips):
    """The hostile case: checksums recomputed after the damage, so every field check is on its own."""
    buf = bytearray(SAMPLE)
    for pos, x in flips:
        buf[pos] ^= x
    _decode_or_format_error(reseal(bytes(buf)))


@settings(max_examples=100, deadline=2000)
@given(cut=st.integers(HEADER_SIZE, len(SAMPLE) - 33), junk=st.binary(min_size=0, max_size=64))
def test_truncated_or_spliced_sections_with_valid_checksums(cut, junk):
    _decode_or_format_error(reseal(SAMPLE[:cut] + junk + SAMPLE[-32:]))


def _file_with_section(body: bytes, spec: bytes = b"{}", n_tensors: int = 1) -> bytes:
    section = struct.pack("<I", len(body)) + body + struct.pack("<I", zlib.crc32(body))
    length = HEADER_SIZE + len(spec) + 4 + len(section) + 32
    head = HEADER.pack(MAGIC, 1, 0, length, len(spec), n_tensors)
    data = head + struct.pack("<I", zlib.crc32(head)) + spec + struct.pack("<I", zlib.crc32(spec)) + section
    return data + hashlib.sha256(data).digest()


def _section(shape, kind_tail: bytes) -> bytes:
    w = Writer()
    w.varint(1)
    w.raw(b"w")
    w.u8(1)  # float32
    w.u8(len(shape))
    for d in shape:
        w.varint(d)
    w.raw(kind_tail)
    return w.getvalue()


@pytest.mark.parametrize(
    "shape,tail",
    [
        ((1 << 40, 1 << 40), b"\x00"),  # raw tensor of 2^80 elements
        ((1 << 20, 1 << 20), b"\x01\x00\x00"),  # sparse, "all" positions: a dense 2^40 mask
        ((1 << 13, 1 << 13), b"\x01\x01\x01"),  # sparse, 64 M elements declared by a tiny file
    ],
)
def test_hostile_huge_shape_is_refused_before_allocating(shape, tail):
    data = _file_with_section(_section(shape, tail))
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="elements"):
            decode_file(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_hostile_symbol_counts_and_tables_are_refused():
    # a valid shape, then an ANS stream claiming 2^60 symbols / a 2^30-symbol alphabet
    w = Writer()
    w.u8(1)  # sparse
    w.varint(10)  # nnz
    w.u8(3)  # bitmap-ans
    w.varint(1 << 60)
    with pytest.raises(FormatError, match="count"):
        decode_file(_file_with_section(_section((16, 16), w.getvalue())))
    w = Writer()
    w.u8(1)
    w.varint(10)
    w.u8(4)  # gaps-ans
    w.varint(1 << 30)  # gap alphabet
    with pytest.raises(FormatError, match="alphabet"):
        decode_file(_file_with_section(_section((16, 16), w.getvalue())))


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: b"PK\x03\x04" + d[4:], "not an .nrz"),
        (lambda d: d[:4] + struct.pack("<H", 9) + d[6:], "version 9"),
        (lambda d: d[:6] + struct.pack("<H", 4) + d[8:], "flags"),
        (lambda d: d[:16] + struct.pack("<I", 1 << 31) + d[20:], "spec length|checksum"),
        (lambda d: d[:20] + struct.pack("<I", 1 << 31) + d[24:], "tensors|checksum"),
    ],
)
def test_header_problems_have_clear_messages(mutate, message):
    with pytest.raises(FormatError, match=message):
        decode_file(reseal(mutate(SAMPLE)) if b"NRZ1" == mutate(SAMPLE)[:4] else mutate(SAMPLE))


def test_spec_must_be_a_json_object():
    for spec in (b"[1, 2]", b"{not json", b"\xff\xfe", b"[" * 5000 + b"]" * 5000):
        with pytest.raises(FormatError, match="spec"):
            decode_file(_file_with_section(_section((2,), b"\x00" + b"\x00" * 8), spec=spec))


def test_compressed_spec_bomb_is_refused():
    bomb = zlib.compress(b" " * (64 << 20), 9)  # 64 MiB of whitespace in ~65 kB
    body = _section((2,), b"\x00" + b"\x00" * 8)
    section = struct.pack("<I", len(body)) + body + struct.pack("<I", zlib.crc32(body))
    length = HEADER_SIZE + len(bomb) + 4 + len(section) + 32
    head = HEADER.pack(MAGIC, 1, 1, length, len(bomb), 1)
    data = head + struct.pack("<I", zlib.crc32(head)) + bomb + struct.pack("<I", zlib.crc32(bomb)) + section
    data += hashlib.sha256(data).digest()
    with pytest.raises(FormatError, match="inflates beyond"):
        decode_file(data)
