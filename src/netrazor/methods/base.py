"""The one small object through which a method reaches the user's data and training step.

Like NNI's evaluator: a method never builds its own training loop; it asks the
adapter to train (with its callbacks and/or loss) and to evaluate. So every
method works on any ``nn.Module`` the user trains with netrazor's Trainer, and a
user with their own loop can subclass ``Adapter`` and override ``train``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from netrazor.data.types import DataBundle


@dataclass
class Adapter:
    data: DataBundle
    train_config: Any  # netrazor.train.TrainConfig; Any keeps this module import-light
    device: str = "cpu"
    progress: Callable[..., None] | None = None
    run_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.data.input_shape

    def example_input(self, batch: int = 2) -> torch.Tensor:
        """A real, normalised batch from the validation split (for surgery checks and tracing)."""
        return self.data.normalize(self.data.val.images[:batch]).to(self.device)

    def train(
        self,
        model: nn.Module,
        epochs: int | None = None,
        callbacks: Sequence[Any] = (),
        loss_fn: Callable | None = None,
        run_dir: Path | None = None,
        resume: bool = False,
        **overrides: Any,
    ) -> list[dict]:
        """Train ``model`` in place with the user's recipe (optionally fewer epochs / other knobs)."""
        from netrazor.train import Trainer

        config = self.train_config
        changes = dict(overrides)
        if epochs is not None:
            changes["epochs"] = epochs
            # A run shorter than the recipe's warm-up (a method's 1-epoch fine-tune of a trained net under
            # a CIFAR recipe) trains without one: the warm-up must be shorter than the run.
            if "warmup_epochs" not in changes and getattr(config, "warmup_epochs", 0) >= max(1, epochs):
                changes["warmup_epochs"] = 0
        if changes:
            config = dataclasses.replace(config, **changes)
        trainer = Trainer(
            model,
            self.data,
            config,
            callbacks=list(callbacks),
            run_dir=run_dir,
            loss_fn=loss_fn,
            progress=self.progress,
            device=self.device,
        )
        return trainer.fit(resume=resume)

    def evaluate(self, model: nn.Module, split: str = "val") -> dict:
        """``{"loss", "accuracy", "error"}`` on ``split`` ("val" for decisions, "test" for the final line)."""
        from netrazor.measure import evaluate

        return evaluate(model, getattr(self.data, split), self.data.mean, self.data.std)
