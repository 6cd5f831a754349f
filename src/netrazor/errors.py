"""One exception family for every failure a user can cause.

Each message says what went wrong *and* what to do about it. The CLI catches
``NetrazorError`` and prints the message without a traceback.
"""

from __future__ import annotations


class NetrazorError(Exception):
    """Base class of every user-facing netrazor error."""


class DataError(NetrazorError):
    """A data set is missing, incomplete or malformed."""


class ModelError(NetrazorError):
    """Unknown model name, bad model arguments, or a spec/weights mismatch."""


class CheckpointError(NetrazorError):
    """A checkpoint or saved model is missing, truncated, corrupt or does not match its spec."""


class TrainingError(NetrazorError):
    """Training cannot go on (for example the loss became NaN or infinite)."""


class SurgeryError(NetrazorError):
    """A graph change could not be applied or failed its output-equivalence check."""


class FormatError(NetrazorError):
    """A binary artifact (.nrz) is truncated, corrupt, hostile or of an unknown version."""


class RecipeError(NetrazorError):
    """A recipe is invalid: unknown stage, bad field, missing data set."""


class ConfigError(NetrazorError):
    """A bad argument or option value."""
