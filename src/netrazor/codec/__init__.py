"""netrazor.codec: the .nrz container (docs/nrz-format.md) — pack a model, unpack it exactly."""

from netrazor.codec.api import PackReport, pack, read_nrz, unpack, unpack_state_dict, verify
from netrazor.codec.container import MAGIC, MAX_RATIO, VERSION, decode_file, encode_file

__all__ = [
    "PackReport", "pack", "unpack", "unpack_state_dict", "read_nrz", "verify",
    "encode_file", "decode_file", "MAGIC", "VERSION", "MAX_RATIO",
]
