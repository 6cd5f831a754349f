"""Little-endian field reading and writing with bounds checks.

``Reader`` never hands out more bytes than remain: every length is compared with the
remaining bytes *before* anything is allocated, and every failure is a ``FormatError``
naming the field, so a truncated or hostile file cannot crash or exhaust memory.
"""

from __future__ import annotations

import struct

from netrazor.errors import FormatError

_U8, _U16, _U32, _U64 = struct.Struct("<B"), struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")


class Reader:
    """A cursor over ``data[start:end]`` that raises ``FormatError`` instead of over-reading."""

    def __init__(self, data: bytes | memoryview, start: int = 0, end: int | None = None, what: str = "file"):
        self.data = memoryview(data)
        self.pos = start
        self.end = len(self.data) if end is None else end
        self.what = what

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def need(self, n: int, field: str) -> None:
        if n < 0 or n > self.remaining:
            raise FormatError(
                f"{self.what}: field '{field}' needs {n} bytes but only {self.remaining} remain; "
                "the .nrz file is truncated or corrupt — re-create it with `netrazor pack`."
            )

    def take(self, n: int, field: str) -> memoryview:
        self.need(n, field)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def _unpack(self, st: struct.Struct, field: str) -> int:
        return st.unpack(self.take(st.size, field))[0]

    def u8(self, field: str) -> int:
        return self._unpack(_U8, field)

    def u16(self, field: str) -> int:
        return self._unpack(_U16, field)

    def u32(self, field: str) -> int:
        return self._unpack(_U32, field)

    def u64(self, field: str) -> int:
        return self._unpack(_U64, field)

    def varint(self, field: str, limit: int) -> int:
        """An unsigned LEB128 integer of at most 10 bytes whose value must be ``<= limit``."""
        value, shift = 0, 0
        for _ in range(10):
            byte = self.u8(field)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value > limit:
                    raise FormatError(f"{self.what}: field '{field}' = {value} exceeds its limit {limit}; the file is corrupt.")
                return value
            shift += 7
        raise FormatError(f"{self.what}: field '{field}' is an over-long varint; the file is corrupt.")

    def expect_end(self) -> None:
        if self.remaining:
            raise FormatError(f"{self.what}: {self.remaining} unexpected trailing bytes; the file is corrupt.")


class Writer:
    """Accumulates little-endian fields."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u8(self, v: int) -> None:
        self.parts.append(_U8.pack(v))

    def u16(self, v: int) -> None:
        self.parts.append(_U16.pack(v))

    def u32(self, v: int) -> None:
        self.parts.append(_U32.pack(v))

    def u64(self, v: int) -> None:
        self.parts.append(_U64.pack(v))

    def varint(self, v: int) -> None:
        out = bytearray()
        while True:
            byte = v & 0x7F
            v >>= 7
            if v:
                out.append(byte | 0x80)
            else:
                out.append(byte)
                break
        self.parts.append(bytes(out))

    def raw(self, b: bytes) -> None:
        self.parts.append(bytes(b))

    def getvalue(self) -> bytes:
        return b"".join(self.parts)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)
