"""The knobs of one training run, validated up front so a typo fails before any epoch runs."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from netrazor.data.loader import AUGMENTATIONS as AUGMENTS  # one list of augmentations, the loader's
from netrazor.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """One training recipe.

    epochs          full passes over the training split.
    batch_size      *global* batch; under DDP each rank takes ``batch_size // world_size``.
    optimizer       "sgd" (momentum, optional Nesterov), "adam" (L2 weight decay added to the
                    gradient, as torch.optim.Adam) or "adamw" (decoupled decay, Loshchilov & Hutter 2019).
    lr              peak learning rate (reached after the warm-up).
    momentum        SGD momentum; for Adam/AdamW it is beta1.
    nesterov        Nesterov momentum for SGD (Sutskever et al. 2013).
    weight_decay    coefficient of the decay (all trainable parameters).
    schedule        "cosine" (to 0 at the last step, Loshchilov & Hutter 2017), "step" (x gamma at
                    each epoch in ``milestones``) or "constant". Evaluated per optimizer step, so a
                    resumed run sees exactly the same learning rates.
    warmup_epochs   linear warm-up length in epochs (may be fractional), from lr/warmup_steps to lr.
    label_smoothing as in torch.nn.functional.cross_entropy (Szegedy et al. 2016).
    augment         None -> the data bundle's default ("crop_flip" for CIFAR), else "none", "crop_flip"
                    or "shift" (translation by up to 2 px, no flip: for digits).
    seed            seeds torch/numpy/random and the per-epoch shuffle/augmentation streams.
    channels_last   NHWC memory format for conv nets (13-30 % faster on these CPUs).
    grad_clip       max global L2 norm of the gradients, or None.
    drop_last       drop the last incomplete batch of each epoch.
    eval_batch_size batch size of the per-epoch validation pass.
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "cosine"
    milestones: tuple[int, ...] = field(default_factory=tuple)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: str | None = None
    seed: int = 0
    channels_last: bool = False
    grad_clip: float | None = None
    drop_last: bool = False
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        # Normalise milestones (lists from JSON/CLI) to a tuple of ints before validating.
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        self.validate()

    def validate(self) -> None:
        def bad(name: str, value: Any, need: str) -> ConfigError:
            return ConfigError(f"TrainConfig.{name}={value!r} is invalid: {need}.")

        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise bad("epochs", self.epochs, "pass a whole number >= 1")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise bad("batch_size", self.batch_size, "pass a whole number >= 1")
        if not isinstance(self.eval_batch_size, int) or self.eval_batch_size < 1:
            raise bad("eval_batch_size", self.eval_batch_size, "pass a whole number >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", self.optimizer, f"choose one of {', '.join(OPTIMIZERS)}")
        if not _finite(self.lr) or self.lr <= 0:
            raise bad("lr", self.lr, "pass a positive finite learning rate, e.g. 0.1 for SGD or 1e-3 for Adam")
        if not _finite(self.momentum) or not 0.0 <= self.momentum < 1.0:
            raise bad("momentum", self.momentum, "pass a value in [0, 1)")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise bad("nesterov", self.nesterov, "Nesterov needs optimizer='sgd' with momentum > 0")
        if not _finite(self.weight_decay) or self.weight_decay < 0:
            raise bad("weight_decay", self.weight_decay, "pass a value >= 0")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", self.schedule, f"choose one of {', '.join(SCHEDULES)}")
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:])):
            raise bad("milestones", self.milestones, "pass strictly increasing epoch numbers")
        if any(m < 1 or m > self.epochs for m in self.milestones):
            raise bad("milestones", self.milestones, f"each milestone must be an epoch in 1..{self.epochs}")
        if self.schedule == "step" and not self.milestones:
            raise bad("milestones", self.milestones, "schedule='step' needs at least one milestone epoch")
        if not _finite(self.gamma) or not 0.0 < self.gamma <= 1.0:
            raise bad("gamma", self.gamma, "pass a factor in (0, 1]")
        if not _finite(self.warmup_epochs) or not 0.0 <= self.warmup_epochs < self.epochs:
            raise bad("warmup_epochs", self.warmup_epochs, f"pass a value in [0, epochs={self.epochs})")
        if not _finite(self.label_smoothing) or not 0.0 <= self.label_smoothing < 1.0:
            raise bad("label_smoothing", self.label_smoothing, "pass a value in [0, 1)")
        if self.augment is not None and self.augment not in AUGMENTS:
            raise bad("augment", self.augment, f"choose None (data default) or one of {', '.join(AUGMENTS)}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", self.seed, "pass a whole number >= 0")
        if self.grad_clip is not None and (not _finite(self.grad_clip) or self.grad_clip <= 0):
            raise bad("grad_clip", self.grad_clip, "pass None or a positive norm")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}; valid fields: {sorted(known)}.")
        return cls(**d)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
