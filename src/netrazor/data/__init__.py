"""Data sets as in-memory uint8 tensors with fixed train/validation/test splits."""

from netrazor.data.datasets import describe, load_data
from netrazor.data.fetch import data_root, fetch
from netrazor.data.loader import BatchLoader
from netrazor.data.types import DataBundle, ImageSet, make_synthetic

__all__ = [
    "BatchLoader",
    "DataBundle",
    "ImageSet",
    "data_root",
    "describe",
    "fetch",
    "load_data",
    "make_synthetic",
]
