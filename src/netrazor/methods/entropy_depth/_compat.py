"""Soft link to the training loop's Callback base (netrazor.train), with a no-op stand-in.

The Trainer calls hooks by name (any object with some hook methods works), so the stand-in only
matters while netrazor.train is being built; subclassing the real base when present keeps
``isinstance`` checks and future default hooks working.
"""

from __future__ import annotations

try:
    from netrazor.train import Callback as CallbackBase  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the state of netrazor.train
    try:
        from netrazor.train.callbacks import Callback as CallbackBase  # type: ignore[no-redef]
    except ImportError:

        class CallbackBase:  # type: ignore[no-redef]
            def on_train_start(self, trainer): ...
            def on_epoch_start(self, trainer, epoch): ...
            def extra_loss(self, trainer):
                return None
            def on_after_backward(self, trainer): ...
            def on_step_end(self, trainer, step, loss): ...
            def on_epoch_end(self, trainer, epoch, metrics): ...
            def on_train_end(self, trainer): ...
            def state_dict(self):
                return {}
            def load_state_dict(self, d): ...
