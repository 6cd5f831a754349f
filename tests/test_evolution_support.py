"""Shared helpers of the evolution tests (no tests here): a tiny CNN, a trained teacher and a
stand-in adapter whose ``train`` is a minimal loop honouring ``loss_fn`` and the callback hooks, so
these tests do not depend on the train/measure areas."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from netrazor.data import make_synthetic
from netrazor.methods.base import Adapter


class TinyCNN(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3)
        self.fc1 = nn.Linear(6 * 7 * 7, 32)
        self.fc2 = nn.Linear(32, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class StandInAdapter(Adapter):
    """``Adapter`` with a local SGD loop (same hook order as the contract's Trainer)."""

    def train(self, model, epochs=None, callbacks=(), loss_fn=None, run_dir=None, resume=False, **overrides):
        epochs = 1 if epochs is None else epochs
        opt = torch.optim.SGD(model.parameters(), lr=overrides.get("lr", 0.05), momentum=0.9, weight_decay=1e-4)
        g = torch.Generator().manual_seed(0)
        history = []
        for cb in callbacks:
            cb.on_train_start(self)
        model.train()
        for epoch in range(epochs):
            perm = torch.randperm(len(self.data.train), generator=g)
            for start in range(0, len(perm), 64):
                idx = perm[start:start + 64]
                x = self.data.normalize(self.data.train.images[idx])
                y = self.data.train.labels[idx]
                opt.zero_grad()
                if loss_fn is None:
                    loss = F.cross_entropy(model(x), y)
                else:
                    loss, _ = loss_fn(model, x, y)
                loss.backward()
                for cb in callbacks:
                    cb.on_after_backward(self)
                opt.step()
                for cb in callbacks:
                    cb.on_step_end(self, start, float(loss.detach()))
            history.append({"epoch": epoch, "train_loss": float(loss.detach())})
        for cb in callbacks:
            cb.on_train_end(self)
        model.eval()
        return history

    def evaluate(self, model, split="val"):
        s = getattr(self.data, split)
        with torch.no_grad():
            acc = (model(self.data.normalize(s.images)).argmax(1) == s.labels).float().mean().item()
        return {"accuracy": acc, "error": 1 - acc, "loss": float("nan")}


_CACHE: dict = {}


def trained_teacher(seed: int = 0):
    """A TinyCNN trained 3 epochs on the synthetic task, plus its adapter (cached per seed)."""
    if seed not in _CACHE:
        torch.manual_seed(seed)
        data = make_synthetic(n_train=600, n_val=300, n_test=200, seed=seed)
        adapter = StandInAdapter(data=data, train_config=None)
        model = TinyCNN()
        adapter.train(model, epochs=3)
        _CACHE[seed] = (model, adapter)
    model, adapter = _CACHE[seed]
    import copy

    return copy.deepcopy(model).eval(), adapter
