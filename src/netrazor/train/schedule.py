"""Learning-rate schedules as pure functions of the global optimizer step.

Why not ``torch.optim.lr_scheduler``: its state lives in the scheduler object and is tied to one
optimizer; a method that rebuilds the optimizer mid-training (units removed) or a resumed run
would have to re-sync it. A pure ``factor(step)`` needs only the step counter, so resume and
``Trainer.rebuild_optimizer`` keep the schedule position for free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from netrazor.train.config import TrainConfig


@dataclass(frozen=True)
class LRSchedule:
    """Multiplier of the peak learning rate for each 0-based optimizer step.

    schedule        "cosine" | "step" | "constant" (see TrainConfig).
    total_steps     epochs * steps_per_epoch.
    steps_per_epoch optimizer steps in one epoch (milestones are in epochs).
    warmup_steps    linear warm-up: step s < warmup_steps gets (s + 1) / warmup_steps (Goyal et al.
                    2017), so the first update is small and step ``warmup_steps`` runs at the peak.
    """

    schedule: str
    total_steps: int
    steps_per_epoch: int
    warmup_steps: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    @classmethod
    def from_config(cls, config: TrainConfig, steps_per_epoch: int) -> "LRSchedule":
        steps_per_epoch = max(1, int(steps_per_epoch))
        return cls(
            schedule=config.schedule,
            total_steps=config.epochs * steps_per_epoch,
            steps_per_epoch=steps_per_epoch,
            warmup_steps=int(round(config.warmup_epochs * steps_per_epoch)),
            milestones=tuple(config.milestones),
            gamma=config.gamma,
        )

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "step":
            # Drops take effect at the first step of the milestone epoch.
            passed = sum(1 for m in self.milestones if step >= m * self.steps_per_epoch)
            return self.gamma**passed
        # Cosine from the end of warm-up to zero at total_steps (SGDR without restarts).
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
