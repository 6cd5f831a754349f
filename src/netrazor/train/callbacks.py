"""Hooks through which methods (gates, entropy pruning, layer folding…) take part in training.

Order within one optimizer step (the Trainer's contract with every callback):

    on_epoch_start(trainer, epoch)               # once per epoch, before the first batch
      forward: loss, logits = loss_fn(model, x, y)
      loss += sum(extra_loss(trainer))           # every callback's regulariser (gates, PReLU…)
      backward
      on_after_backward(trainer)                 # edit .grad (e.g. gradient estimators, projections)
      grad clipping (config.grad_clip), optimizer.step()
      on_step_end(trainer, step, loss)           # step = global optimizer step just taken (0-based)
    on_epoch_end(trainer, epoch, metrics)        # after validation; metrics is the history row

``on_train_start`` runs once per ``fit`` (also after a resume, when the state is restored);
``on_train_end`` once at the end (not on an exception). Setting ``trainer.stop_training = True``
in any hook ends training after the current step; the epoch is then closed (validated and
checkpointed) as usual.

Resume: ``state_dict()`` must return tensors / numbers / strings / lists / dicts (no objects; it
is stored as safetensors + JSON). On resume ``load_state_dict`` is called *before* the model
weights are loaded, so a callback that physically shrank the model can shrink a freshly built
model the same way first.

Optional extra hook: ``param_groups(trainer) -> list[dict] | None`` returns optimizer groups
``{"params": [...], "lr_scale": float, "weight_decay": float}`` for parameters that need their own
settings (e.g. gate probabilities without weight decay); the rest of the model forms the default group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

if TYPE_CHECKING:  # pragma: no cover
    from netrazor.train.trainer import Trainer


class Callback:
    """Base class with every hook as a no-op; override what you need."""

    def on_train_start(self, trainer: "Trainer") -> None: ...

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None: ...

    def extra_loss(self, trainer: "Trainer") -> torch.Tensor | None:
        return None

    def on_after_backward(self, trainer: "Trainer") -> None: ...

    def on_step_end(self, trainer: "Trainer", step: int, loss: float) -> None: ...

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict) -> None: ...

    def on_train_end(self, trainer: "Trainer") -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class CallbackList:
    """Calls a hook on every callback in order. Callbacks need not subclass :class:`Callback`:
    any object with some of the hook methods works (missing hooks are skipped)."""

    def __init__(self, callbacks: Sequence[Any]):
        self.callbacks = list(callbacks)

    def call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(*args)

    def extra_loss(self, trainer: "Trainer") -> torch.Tensor | None:
        total = None
        for cb in self.callbacks:
            fn = getattr(cb, "extra_loss", None)
            term = fn(trainer) if fn is not None else None
            if term is not None:
                total = term if total is None else total + term
        return total

    def param_groups(self, trainer: "Trainer") -> list[dict]:
        groups: list[dict] = []
        for cb in self.callbacks:
            fn = getattr(cb, "param_groups", None)
            if fn is not None:
                groups.extend(fn(trainer) or [])
        return groups

    def state_dicts(self) -> list[dict]:
        out = []
        for cb in self.callbacks:
            fn = getattr(cb, "state_dict", None)
            out.append({"class": type(cb).__qualname__, "state": fn() if fn is not None else {}})
        return out

    def __iter__(self):
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)


class EarlyStopping(Callback):
    """Stop when ``monitor`` (a history key, default val_acc) has not improved for ``patience`` epochs.

    Knobs: monitor, mode ("max"/"min"), patience, min_delta. Its state resumes with the run.
    """

    def __init__(self, monitor: str = "val_acc", mode: str = "max", patience: int = 5, min_delta: float = 0.0):
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.best: float | None = None
        self.bad_epochs = 0

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict) -> None:
        value = metrics.get(self.monitor)
        if value is None:
            return
        better = self.best is None or (
            value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta
        )
        if better:
            self.best, self.bad_epochs = float(value), 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                trainer.stop_training = True

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state.get("best"), int(state.get("bad_epochs", 0))
