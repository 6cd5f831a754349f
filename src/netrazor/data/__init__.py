"""Data sets as in-memory uint8 tensors with fixed train/validation/test splits."""

from netrazor.data.types import DataBundle, ImageSet, make_synthetic

__all__ = ["DataBundle", "ImageSet", "make_synthetic"]
