"""The one training loop every netrazor method uses.

A ``Trainer`` owns: the model (``trainer.model``, the raw module; ``trainer.forward_model`` is the
DDP wrapper under torchrun), the optimizer, the per-step LR schedule, the epoch/step counters and
the history. Methods take part through callbacks (see ``netrazor.train.callbacks`` for the order
of hooks) or a custom ``loss_fn(model, x, y) -> (loss, logits)``.

Exact resume: everything that decides the next update is checkpointed after each epoch — model
weights and buffers, optimizer state, the global step (which alone fixes the learning rate), the
RNG states, callback states — and the data order/augmentation of an epoch depends only on
``(seed, epoch)``. A resumed run therefore replays the remaining epochs bit for bit on the same
machine and thread count. A run killed mid-epoch restarts that epoch from its beginning.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from netrazor.data.loader import BatchLoader
from netrazor.data.types import DataBundle, ImageSet
from netrazor.errors import CheckpointError, ConfigError, TrainingError
from netrazor.train import checkpoint as ckpt
from netrazor.train.callbacks import CallbackList
from netrazor.train.config import TrainConfig
from netrazor.train.distributed import all_reduce_sum, init_distributed
from netrazor.train.losses import LossFn, cross_entropy_loss
from netrazor.train.optim import IndexMaps, carry_state, make_optimizer, ordered_names, param_names
from netrazor.train.schedule import LRSchedule
from netrazor.train.state import flatten, unflatten

log = logging.getLogger(__name__)

History = list  # list[dict]: one row per epoch (see Trainer.fit)


@contextlib.contextmanager
def _own_rng_stream() -> Iterator[None]:
    """Run ``fit`` on its own RNG stream and give the caller's global RNG states back afterwards.

    Why: training seeds the global generators from ``config.seed`` (fresh run) or the checkpoint
    (resume), so its dropout/gate samples are reproducible; without this a method that calls
    ``Adapter.train`` between its own random draws would get the same draws after every fit.
    """
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        np.random.set_state(np_state)
        random.setstate(py_state)


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Train ``model`` on ``data.train``, validate on ``data.val`` after every epoch.

    Arguments: ``config`` a :class:`TrainConfig` (or its dict); ``callbacks`` objects with any of
    the hooks of :class:`netrazor.train.Callback`; ``run_dir`` where epoch checkpoints go (None: no
    checkpoints, no resume); ``loss_fn(model, x, y) -> (loss, logits)`` (default: cross-entropy with
    ``config.label_smoothing``); ``progress`` a callable receiving event dicts (see docs/training.md);
    ``device`` "cpu" or "cuda" (under torchrun each rank takes ``cuda:LOCAL_RANK``).

    Attributes callbacks may use: ``model``, ``forward_model``, ``optimizer``, ``config``, ``data``,
    ``epoch`` (current 0-based epoch; after an epoch ends: epochs completed), ``step`` (optimizer
    steps taken), ``steps_per_epoch``, ``history``, ``stop_training``, ``lr``, ``dist``.
    """

    def __init__(
        self,
        model: nn.Module,
        data: DataBundle,
        config: TrainConfig | dict,
        callbacks: Sequence[Any] = (),
        run_dir: str | Path | None = None,
        loss_fn: LossFn | None = None,
        progress: Callable[[dict], None] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
        self.data = data
        self.dist, self.device = init_distributed(device)
        world = self.dist.world_size
        if self.config.batch_size % world:
            raise ConfigError(
                f"batch_size {self.config.batch_size} is the global batch and must divide by the {world} "
                f"processes; pass a multiple of {world}."
            )
        self.model = model.to(self.device)  # channels_last (if asked) only while fit runs
        self.forward_model: nn.Module = self.model
        self.callbacks = CallbackList(callbacks)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.loss_fn = loss_fn or cross_entropy_loss(self.config.label_smoothing)
        self.progress = progress
        self.augment = self.config.augment or getattr(data, "augment", None) or "none"
        self.train_loader = BatchLoader(
            data.train,
            self.config.batch_size // world,
            shuffle=True,
            seed=self.config.seed,
            mean=data.mean,
            std=data.std,
            augment=self.augment,
            drop_last=self.config.drop_last,
            rank=self.dist.rank,
            world_size=world,
            device=self.device,
        )
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"the training split ({len(data.train)} examples) gives no batch of {self.config.batch_size}; "
                "lower batch_size or turn off drop_last."
            )
        self.schedule = LRSchedule.from_config(self.config, self.steps_per_epoch)
        self.optimizer: torch.optim.Optimizer | None = None
        self._names: dict[int, str] = {}
        self.epoch = 0
        self.step = 0
        self.history: list[dict] = []
        self.stop_training = False
        self._fitting = False

    # ------------------------------------------------------------------ optimizer and schedule
    @property
    def lr(self) -> float:
        """Peak-group learning rate at the current step."""
        return self.config.lr * self.schedule.factor(self.step)

    def _set_lr(self) -> float:
        lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def _build_optimizer(self) -> None:
        custom = self.callbacks.param_groups(self)
        claimed: set[int] = set()
        extra_named: list[tuple[str, nn.Parameter]] = []
        groups = []
        for gi, g in enumerate(custom):
            params = []
            for j, item in enumerate(g["params"]):
                name, p = item if isinstance(item, tuple) else (None, item)
                if not p.requires_grad or id(p) in claimed:
                    continue
                claimed.add(id(p))
                params.append(p)
                extra_named.append((name or f"param_group{gi}.{j}", p))
            groups.append(dict(g, params=params))
        default = [p for p in self.model.parameters() if p.requires_grad and id(p) not in claimed]
        groups.insert(0, {"params": default})
        self.optimizer = make_optimizer(groups, self.config)
        self._names = param_names(self.model, extra_named)
        self._set_lr()

    def _wrap(self) -> None:
        if not self.dist.enabled:
            self.forward_model = self.model
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.forward_model = DDP(self.model, device_ids=device_ids)

    def rebuild_optimizer(self, index_maps: IndexMaps | None = None) -> dict[str, str]:
        """Rebuild the optimizer after the model changed its parameters (e.g. units removed).

        The schedule position is kept (it is a function of ``self.step``). Per-parameter state
        (momentum, Adam moments) is carried over by parameter name: same shape -> kept; shape
        changed and ``index_maps[name] = [(dim, kept_indices), ...]`` given -> sliced; otherwise
        reset. Under DDP the model is wrapped again. Returns ``{name: "kept"|"sliced"|"reset"}``.
        """
        self._training_layout()  # layers the callback just created
        self._wrap()
        if self.optimizer is None:
            self._build_optimizer()
            return {}
        old, old_names = self.optimizer, self._names
        self._build_optimizer()
        outcome = carry_state(old, old_names, self.optimizer, self._names, index_maps)
        log.debug("optimizer rebuilt: %s", outcome)
        return outcome

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> History:
        """Train for ``config.epochs`` epochs (or until a callback sets ``stop_training``).

        ``resume=True`` continues from the last epoch checkpoint in ``run_dir`` (a run that died
        before its first checkpoint starts from scratch). Returns the history: one dict per epoch
        with epoch (0-based), train_loss, train_acc, val_loss, val_acc, lr, seconds, images_per_s.
        Training draws from the global RNGs seeded by ``config.seed`` (or restored on resume); the
        caller's RNG states are restored when ``fit`` returns or raises.

        With ``config.channels_last`` the model trains in channels_last memory format and is handed
        back in the default contiguous format (before ``on_train_end``, and also when ``fit`` raises):
        layers that later passes create (folding, surgery) are contiguous, so one layout is never
        mixed with the other, and saved tensors are plain.
        """
        with _own_rng_stream():
            try:
                return self._fit(resume)
            finally:
                self._hand_back_layout()

    def _training_layout(self) -> None:
        # NHWC is faster for convs on CPU; parameters keep their identity (.data is swapped), so the
        # optimizer and callbacks holding them stay valid. Only while fit runs (see fit).
        if self.config.channels_last and self._fitting:
            self.model.to(memory_format=torch.channels_last)

    def _hand_back_layout(self) -> None:
        if self.config.channels_last and self._fitting:
            self.model.to(memory_format=torch.contiguous_format)
        self._fitting = False

    def _fit(self, resume: bool) -> History:
        self._fitting = True
        self._training_layout()
        restored = False
        if resume:
            if self.run_dir is None:
                raise ConfigError("resume=True needs run_dir (the folder holding checkpoint.json); pass run_dir=.")
            if ckpt.checkpoint_exists(self.run_dir):
                self._restore()
                restored = True
            else:
                log.info("no checkpoint in %s yet; starting the run from the beginning", self.run_dir)
        if not restored:
            seed_everything(self.config.seed)
            self._wrap()
            self._build_optimizer()
        self._training_layout()  # layers a callback re-created while resuming
        self._emit({"event": "train_start", "epochs": self.config.epochs, "start_epoch": self.epoch,
                    "steps_per_epoch": self.steps_per_epoch})
        self.callbacks.call("on_train_start", self)
        while self.epoch < self.config.epochs and not self.stop_training:
            self._run_epoch(self.epoch)
        self._hand_back_layout()
        self.callbacks.call("on_train_end", self)
        self._emit({"event": "train_end", "epochs": self.config.epochs, "history": self.history})
        return self.history

    def _run_epoch(self, epoch: int) -> None:
        cfg = self.config
        self.model.train()
        self.train_loader.set_epoch(epoch)
        self.callbacks.call("on_epoch_start", self, epoch)
        started = time.perf_counter()
        loss_sum = correct = seen = 0.0
        for i, (x, y) in enumerate(self.train_loader):
            if cfg.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = self._set_lr()
            loss, logits = self.loss_fn(self.forward_model, x, y)
            extra = self.callbacks.extra_loss(self)
            total = loss if extra is None else loss + extra
            finite = bool(torch.isfinite(total.detach()))
            if self.dist.enabled:
                # Agree across ranks, else the ranks with a finite loss would wait forever in the
                # gradient all-reduce of a rank that stopped.
                finite = all_reduce_sum([0.0 if finite else 1.0], self.device)[0] == 0.0
            if not finite:
                raise self._nan_error(float(total.detach()), epoch, i, lr)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.callbacks.call("on_after_backward", self)
            if cfg.grad_clip is not None:
                params = [p for g in self.optimizer.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            self.optimizer.step()
            self.step += 1
            loss_value = float(loss.detach())
            n = int(y.shape[0])
            loss_sum += loss_value * n
            seen += n
            if logits is not None:
                correct += float((logits.detach().argmax(dim=1) == y).sum())
            self.callbacks.call("on_step_end", self, self.step - 1, loss_value)
            if self.progress is not None and self.dist.is_main:
                elapsed = max(time.perf_counter() - started, 1e-9)
                self._emit({"event": "step", "epoch": epoch, "epochs": cfg.epochs, "step": i + 1,
                            "steps_per_epoch": self.steps_per_epoch, "global_step": self.step,
                            "loss": loss_sum / seen, "acc": correct / seen, "lr": lr,
                            "images_per_s": seen * self.dist.world_size / elapsed})
            if self.stop_training:
                break
        loss_sum, correct, seen = all_reduce_sum([loss_sum, correct, seen], self.device)
        seconds = time.perf_counter() - started
        val = self.evaluate("val")
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "val_loss": val.get("loss", float("nan")),
            "val_acc": val.get("accuracy", float("nan")),
            "lr": self.config.lr * self.schedule.factor(max(self.step - 1, 0)),
            "seconds": seconds,
            "images_per_s": seen / max(seconds, 1e-9),
        }
        self.history.append(row)
        self.callbacks.call("on_epoch_end", self, epoch, row)
        self.epoch = epoch + 1
        if self.run_dir is not None and self.dist.is_main:
            self._save()
        if self.dist.is_main:
            log.info(
                "epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  lr %.3g  %.1fs  %.0f img/s",
                epoch + 1, cfg.epochs, row["train_loss"], row["train_acc"], row["val_loss"], row["val_acc"],
                row["lr"], seconds, row["images_per_s"],
            )
        self._emit(dict(row, event="epoch_end", epochs=cfg.epochs))

    def _nan_error(self, value: float, epoch: int, batch: int, lr: float) -> TrainingError:
        kept = f"the last good checkpoint in {self.run_dir} is kept" if self.run_dir else "no checkpoint was being written"
        where = "" if not self.dist.enabled else f" on at least one of {self.dist.world_size} ranks (here: {value})"
        if self.dist.enabled:
            value = "non-finite"
        return TrainingError(
            f"the loss became {value}{where} at epoch {epoch + 1}, batch {batch + 1}/{self.steps_per_epoch} "
            f"(optimizer step {self.step}) with lr {lr:.3g}; training cannot go on. Lower the learning rate "
            f"(e.g. --lr {self.config.lr / 10:g}), add warm-up or set grad_clip; {kept}."
        )

    def _emit(self, event: dict) -> None:
        if self.progress is not None and self.dist.is_main:
            self.progress(event)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: str = "val") -> dict:
        """Cross-entropy loss and accuracy of the model on ``data.<split>`` (every rank: full split)."""
        imageset: ImageSet = getattr(self.data, split)
        if len(imageset) == 0:
            return {}
        was_training = self.model.training
        self.model.eval()
        loader = BatchLoader(imageset, self.config.eval_batch_size, mean=self.data.mean, std=self.data.std, device=self.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for x, y in loader:
            if self.config.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = self.model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
            correct += (logits.argmax(dim=1) == y).sum()
        self.model.train(was_training)
        n = len(imageset)
        acc = float(correct) / n
        return {"loss": float(loss_sum) / n, "accuracy": acc, "error": 1.0 - acc}

    # ------------------------------------------------------------------ checkpoints
    def _save(self) -> None:
        tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim_json = flatten(self.optimizer.state_dict(), "optim", tensors)
        cb_states = []
        for i, entry in enumerate(self.callbacks.state_dicts()):
            cb_states.append({"class": entry["class"], "state": flatten(entry["state"], f"callbacks.{i}", tensors)})
        rng_tensors, rng_meta = ckpt.capture_rng()
        tensors.update(rng_tensors)
        meta = {
            "step": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.dist.world_size,
            "stopped": self.stop_training,
            "config": self.config.to_dict(),
            "history": self.history,
            "optimizer": optim_json,
            "param_names": ordered_names(self.optimizer, self._names),
            "callbacks": cb_states,
            "rng": rng_meta,
        }
        ckpt.save_checkpoint(self.run_dir, self.epoch, tensors, meta)

    def _restore(self) -> None:
        tensors, index = ckpt.load_checkpoint(self.run_dir)
        saved_cfg, now_cfg = index["config"], self.config.to_dict()
        diff = sorted(k for k in set(saved_cfg) | set(now_cfg) if saved_cfg.get(k) != now_cfg.get(k))
        if diff:
            detail = ", ".join(f"{k}: {saved_cfg.get(k)!r} -> {now_cfg.get(k)!r}" for k in diff)
            raise CheckpointError(
                f"the checkpoint in {self.run_dir} was written with a different training config ({detail}); "
                "resume with the run's own config (netrazor train --resume RUN reads it) or start a new run."
            )
        if index["steps_per_epoch"] != self.steps_per_epoch:
            raise CheckpointError(
                f"the checkpoint has {index['steps_per_epoch']} steps per epoch but this data gives "
                f"{self.steps_per_epoch}; resume on the same data set and split, or start a new run."
            )
        saved_cbs = index["callbacks"]
        names = [type(cb).__qualname__ for cb in self.callbacks]
        if [c["class"] for c in saved_cbs] != names:
            raise CheckpointError(
                f"the checkpoint was written with callbacks {[c['class'] for c in saved_cbs]} but this trainer has "
                f"{names}; resume with the same callbacks in the same order."
            )
        # Callbacks first: one that physically shrank the model re-shrinks the fresh model here.
        for cb, entry in zip(self.callbacks, saved_cbs):
            fn = getattr(cb, "load_state_dict", None)
            if fn is not None:
                fn(unflatten(entry["state"], tensors))
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            self.model.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"the checkpoint weights in {self.run_dir} do not fit this model ({exc}); resume with the same "
                "model architecture."
            ) from exc
        self._wrap()
        self._build_optimizer()
        if ordered_names(self.optimizer, self._names) != index["param_names"]:
            raise CheckpointError(
                "the optimizer's parameters differ from the checkpoint's; resume with the same model and callbacks."
            )
        self.optimizer.load_state_dict(unflatten(index["optimizer"], tensors))
        ckpt.restore_rng(tensors, index["rng"])
        self.step = int(index["step"])
        self.epoch = int(index["epoch"])
        self.history = list(index["history"])
        self.stop_training = bool(index["stopped"])
        self._set_lr()
        log.info("resumed from %s after epoch %d (step %d)", self.run_dir, self.epoch, self.step)
