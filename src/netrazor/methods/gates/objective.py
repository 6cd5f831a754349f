"""The gate objective as a training-loop citizen: a ``loss_fn`` plus a trainer callback.

* ``loss_fn(model, x, y)``: the data loss under sampled gates. For the antithetic estimators the
  batch is evaluated twice in one stacked pass; the weights get the mean loss of both copies
  (both are Bernoulli(θ) samples) and θ gets the estimator's gradient through a surrogate term of
  value 0 (θ·ĝ − θ·ĝ, the second detached). Layer gates with the flip estimator get two extra
  no-grad passes each (BatchNorm running statistics are left untouched by those).
* the callback (netrazor.train.Callback hooks):
  ``extra_loss``   κ·expected cost + weight prior + hyper-prior;
  ``on_after_backward``  one step of θ's own optimiser (Adam, ``theta_lr``), then the projection
                   onto [0, 1] (projected SGD); θ never reaches the trainer's optimiser;
  ``on_step_end``  every ``prune_every`` steps: remove structures with θ < τ for good, freeze
                   θ > 1 − τ to 1 (after ``freeze_after`` of training), rebuild the trainer's
                   optimiser when the model shrank;
  ``on_epoch_end`` logs widths, θ snapshots, expected cost and seconds per epoch.

Two phases [REC]: the *gating* phase (the first ``1 − finetune`` of the steps) learns θ; every
schedule (cost warm-up, hyper-prior ramp, ``freeze_after``) is a fraction of it. Then θ is
rounded once (θ < ½ removed, the rest fixed at 1; the share of gates within 0.01 of a vertex just
before is kept in ``converged_before_rounding``) and the *fine-tune* phase trains the
deterministic smaller net with plain single-pass batches: the weights stop paying for the gate
noise, and the last epochs (at the schedule's low learning rates) cost only the small net.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from netrazor.methods.gates.attach import GateSet
from netrazor.methods.gates.cost import CostModel
from netrazor.methods.gates.estimators import Estimator, FlipDifference, get_estimator
from netrazor.methods.gates.priors import VertexPrior, weight_prior
from netrazor.methods.gates.sampling import GateSampling

log = logging.getLogger(__name__)


class GateObjective:
    def __init__(self, gs: GateSet, *, kappa: float = 1.0, layer_vs_unit: float = 0.5, flops_vs_params: float = 0.5,
                 estimator: str | Estimator = "disarm", layer_estimator: str | Estimator = "flip",
                 weight_prior: float = 5e-4, hyper_prior: Any = None, theta_lr: float = 0.01,
                 threshold: float = 0.01, prune_every: int = 100, freeze_after: float = 0.5,
                 total_steps: int | None = None, label_smoothing: float = 0.0, snapshot_every: int | None = None,
                 cost_warmup: float = 0.05, flip_per_step: int | None = None, cost_reference: str = "dense",
                 n_train: int | None = None, finetune: float = 0.0, finetune_loss: Any = None, seed: int = 0):
        self.gs = gs
        # loss_fn(model, x, y) -> (loss, logits) for the fine-tuning of the rounded net (None: cross-entropy),
        # e.g. distillation from a trained dense teacher
        self.finetune_loss = finetune_loss
        self.cost = CostModel(gs, kappa=kappa, flops_vs_params=flops_vs_params, layer_vs_unit=layer_vs_unit,
                              reference=cost_reference, n_train=n_train)
        self.unit_estimator = get_estimator(estimator)
        self.layer_estimator = get_estimator(layer_estimator)
        self.lam = float(weight_prior)
        self.hyper_prior = hyper_prior if hyper_prior is not None else VertexPrior()
        self.theta_lr = float(theta_lr)
        self.threshold = float(threshold)
        self.prune_every = int(prune_every)
        self.freeze_after = float(freeze_after)
        self.total_steps = total_steps
        if not 0.0 <= float(finetune) < 1.0:
            raise ValueError(f"finetune must be in [0, 1), got {finetune}")
        self.finetune = float(finetune)  # share of the steps trained after θ is rounded
        self.rounded = False
        self.converged_before_rounding: float | None = None
        self.label_smoothing = float(label_smoothing)
        # θ snapshots for the record and plots; None: about 100 over the run
        self.snapshot_every = snapshot_every
        self.cost_warmup = float(cost_warmup)
        # exact flips cost 2 no-grad passes per layer gate; with k gates per step (chosen at
        # random, estimate scaled by L/k) the estimator stays unbiased at 2k passes per step
        self.flip_per_step = flip_per_step
        self.generator = torch.Generator().manual_seed(int(seed))
        self.step = 0
        self.theta_optimizer: torch.optim.Optimizer | None = None
        self._epoch_started = 0.0
        # what the record and the plots are made of
        self.history: list[dict] = []  # one row per epoch
        self.trajectory: list[dict] = []  # (step, {set: θ list}) snapshots
        self.removals: list[dict] = []
        self.gates_dense = sum(s.width_dense for s in gs.structures.values())

    # --- helpers ----------------------------------------------------------------------------------
    @property
    def gate_steps(self) -> int | None:
        """Steps of the gating phase (θ is rounded after them)."""
        if not self.total_steps:
            return None
        return max(1, int(round(self.total_steps * (1.0 - self.finetune))))

    @property
    def progress(self) -> float:
        """Fraction of the gating phase done (every θ schedule is expressed in it)."""
        steps = self.gate_steps
        return min(1.0, self.step / steps) if steps else 0.0

    def _estimators(self) -> dict[str, Estimator]:
        return {"unit": self.unit_estimator, "filter": self.unit_estimator, "input": self.unit_estimator,
                "layer": self.layer_estimator}

    def _build_theta_optimizer(self) -> None:
        params = self.gs.thetas()
        self.theta_optimizer = torch.optim.Adam(params, lr=self.theta_lr) if params else None

    # --- loss_fn ----------------------------------------------------------------------------------
    def loss_fn(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if model.training and self.rounded and self.finetune_loss is not None:
            return self.finetune_loss(model, x, y)
        if not model.training or self.rounded:  # eval, or fine-tuning the rounded net: one plain pass
            logits = model(x)
            return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits
        # forward copies of the batch: what the estimators of the gate kinds present need (a net with
        # only flip-estimated layer gates needs one pass, not the unit estimator's two)
        estimators = self._estimators()
        copies = max((estimators[g.kind].copies for g in self.gs.gate_list()), default=1)
        batch = x.shape[0]
        sampling = GateSampling(self.gs.gate_list(), estimators, batch, copies, self.generator)
        with sampling.active():
            xx = x.repeat(copies, *([1] * (x.dim() - 1))) if copies > 1 else x
            yy = y.repeat(copies) if copies > 1 else y
            logits = model(xx)
            per_example = F.cross_entropy(logits, yy, reduction="none", label_smoothing=self.label_smoothing)
            loss = per_example.mean()
            grads = sampling.theta_grads(per_example.detach().view(copies, batch)) if copies > 1 else {}
            if isinstance(self.layer_estimator, FlipDifference):
                # one pass, no dropout: the main pass *is* the flip pass of each gate's sampled value
                reuse = per_example.detach() if copies == 1 and not _has_dropout(model) else None
                grads.update(self._flip_grads(model, x, y, sampling, main_losses=reuse))
        surrogate = None
        for gate in self.gs.gate_list():
            g = grads.get(id(gate))
            if g is None:
                continue
            term = (gate.theta * g.to(gate.theta.device)).sum()
            surrogate = term if surrogate is None else surrogate + term
        if surrogate is not None:
            loss = loss + (surrogate - surrogate.detach())
        return loss, logits[:batch]

    @torch.no_grad()
    def _flip_grads(self, model, x, y, sampling: GateSampling,
                    main_losses: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
        """Exact flip differences of the layer gates (``flip_per_step`` of them, chosen at random).

        ``main_losses``: the main pass's per-example losses, when that pass computed exactly what a
        replay with the gate at its sampled value would (one copy of the batch, no dropout; the
        BatchNorms use batch statistics either way). Then only the *other* value needs a pass:
        one extra no-grad forward per gate instead of two.
        """
        layer_gates = [g for g in self.gs.gate_list() if g.kind == "layer" and not bool(g.frozen.all())]
        if not layer_gates:
            return {}
        scale = 1.0
        if self.flip_per_step is not None and 0 < self.flip_per_step < len(layer_gates):
            pick = torch.randperm(len(layer_gates), generator=self.generator)[: self.flip_per_step].tolist()
            scale = len(layer_gates) / self.flip_per_step
            layer_gates = [layer_gates[i] for i in pick]
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in norms]
        for m in norms:
            m.momentum = 0.0  # keep the running statistics of the real pass only
        try:
            out = {}
            for gate in layer_gates:
                sampled = None
                if main_losses is not None and id(gate) in sampling.noise:
                    xi = sampling.estimator(gate).first(gate.theta.detach(), sampling.noise[id(gate)])
                    sampled = float(xi.reshape(-1)[0])  # layer gates: one sample per batch
                losses = {}
                for value in (1.0, 0.0):
                    if value == sampled:
                        losses[value] = main_losses
                        continue
                    with sampling.replaying(gate, 0, value):
                        losses[value] = F.cross_entropy(model(x), y, reduction="none",
                                                        label_smoothing=self.label_smoothing)
                out[id(gate)] = FlipDifference.from_flips(losses[1.0], losses[0.0]) * scale
            return out
        finally:
            for m, mom in zip(norms, saved):
                m.momentum = mom

    # --- callback hooks ---------------------------------------------------------------------------
    def on_train_start(self, trainer) -> None:
        self._build_theta_optimizer()
        if self.total_steps is None:
            self.total_steps = _guess_total_steps(trainer)
        if self.snapshot_every is None:
            self.snapshot_every = max(1, (self.total_steps or 5000) // 100)
        self._snapshot()

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self._epoch_started = time.perf_counter()

    def extra_loss(self, trainer=None) -> torch.Tensor:
        # [REC] κ ramps in over the first ``cost_warmup`` of training: at step 0 the weights are
        # random, so the data term says nothing yet about which structures matter.
        if self.rounded:  # θ is fixed: the cost is a constant, only the weight prior still acts
            return weight_prior(self.gs, self.lam)
        ramp = 1.0 if self.cost_warmup <= 0 else min(1.0, self.progress / self.cost_warmup)
        cost = self.cost() * ramp
        total = cost + weight_prior(self.gs, self.lam)
        names = list(self.gs.gates)
        thetas = [self.gs.gates[n].theta for n in names]
        # the hyper-prior is self-scaled by each gate's cost gradient (see priors.py)
        scales = torch.autograd.grad(cost, thetas, retain_graph=True, allow_unused=True) if cost.requires_grad else [None] * len(names)
        for name, scale in zip(names, scales):
            s = None if scale is None else scale.detach().abs()
            total = total + self.hyper_prior(self.gs.effective_theta(name), self.progress, s)
        return total

    def on_after_backward(self, trainer=None) -> None:
        if self.rounded:
            return
        if self.theta_optimizer is None:
            self._build_theta_optimizer()
        if self.theta_optimizer is not None:
            self.theta_optimizer.step()
            self.theta_optimizer.zero_grad(set_to_none=True)
        self.gs.project()

    def on_step_end(self, trainer=None, step: int | None = None, loss: float | None = None) -> None:
        self.step += 1
        if self.snapshot_every and self.step % self.snapshot_every == 0:
            self._snapshot()
        if self.rounded:
            return
        if self.finetune > 0 and self.gate_steps is not None and self.step >= self.gate_steps:
            self.round(trainer)
        elif self.prune_every and self.step % self.prune_every == 0:
            self.maintain(trainer)

    def round(self, trainer=None) -> int:
        """End of the gating phase: remove θ < ½, fix the rest at 1 (θ converged or not)."""
        self.converged_before_rounding = self.converged_fraction()
        self._snapshot()
        removed = self.gs.round()
        self.rounded = True
        self.theta_optimizer = None
        log.info("step %d: θ rounded (%.4f of gates were within 0.01 of a vertex); removed %d; widths %s",
                 self.step, self.converged_before_rounding, removed, self.gs.widths())
        if removed:
            self.removals.append({"step": self.step, "removed": removed, "widths": self.gs.widths(), "rounding": True})
        self._rebuild_trainer_optimizer(trainer)
        return removed

    def maintain(self, trainer=None) -> int:
        """Remove θ < τ structures and freeze θ > 1 − τ; rebuild optimisers if the model shrank."""
        frozen = self.gs.freeze_above(self.threshold) if self.progress >= self.freeze_after else 0
        removed = self.gs.prune_below(self.threshold)
        if removed:
            self.removals.append({"step": self.step, "removed": removed, "widths": self.gs.widths()})
            log.info("step %d: removed %d structures; widths %s", self.step, removed, self.gs.widths())
            self._build_theta_optimizer()
            self._rebuild_trainer_optimizer(trainer)
        if frozen:
            log.info("step %d: froze %d gates at θ = 1", self.step, frozen)
        return removed

    def _rebuild_trainer_optimizer(self, trainer) -> None:
        maps = self.gs.pop_index_maps()
        rebuild = getattr(trainer, "rebuild_optimizer", None)
        if rebuild is None:
            return
        # netrazor's Trainer carries momentum over, cut like the weights; other trainers may
        # only offer a plain rebuild
        if "index_maps" in inspect.signature(rebuild).parameters:
            rebuild(index_maps=maps)
        else:
            rebuild()

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        with torch.no_grad():
            frac = float(self.cost.fraction())
        row = {"epoch": int(epoch), "step": self.step, "seconds": time.perf_counter() - self._epoch_started,
               "widths": self.gs.widths(), "expected_cost_fraction": frac,
               "val_error": None if metrics.get("val_acc") is None else 1.0 - float(metrics["val_acc"])}
        self.history.append(row)

    def on_train_end(self, trainer=None) -> None:
        self._snapshot()

    def _snapshot(self) -> None:
        self.trajectory.append({"step": self.step,
                                "theta": {n: self.gs.effective_theta(n).detach().cpu().tolist() for n in self.gs.gates},
                                "kept": {n: self.gs.kept[n].tolist() for n in self.gs.gates}})

    def converged_fraction(self, tol: float = 0.01) -> float:
        """Share of the original gates within ``tol`` of 0 or 1 (removed gates count as 0)."""
        present, near = 0, 0
        for name in self.gs.gates:
            th = self.gs.effective_theta(name).detach()
            near += int(((th <= tol) | (th >= 1 - tol)).sum())
            present += th.numel()
        return (near + self.gates_dense - present) / self.gates_dense if self.gates_dense else 1.0

    def state_dict(self) -> dict:
        return {"step": self.step, "widths": self.gs.widths(), "rounded": self.rounded}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state.get("step", 0))


def _has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


def _guess_total_steps(trainer) -> int | None:
    config = getattr(trainer, "config", None)
    epochs = getattr(config, "epochs", None)
    per_epoch = getattr(trainer, "steps_per_epoch", None)
    if per_epoch is None:
        loader = getattr(trainer, "train_loader", None) or getattr(trainer, "loader", None)
        per_epoch = len(loader) if loader is not None else None
    return int(epochs * per_epoch) if epochs and per_epoch else None
