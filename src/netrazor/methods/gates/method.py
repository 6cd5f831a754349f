"""``GatesMethod``: train with Bernoulli gates, prune during training, hand back a plain smaller net.

The three user knobs of the complexity-aware follow-up (Guenter & Sideris):
  ``kappa``            accuracy vs size: weight of the expected cost (0 = no pruning); with the
                       default log cost, nats per e-fold of network cost (0.2);
  ``layer_vs_unit``    0 … 1: share of the cost gradient given to layer gates vs unit/filter gates;
  ``flops_vs_params``  0 … 1: the cost counts parameters (0, default), MACs (1) or a mix.
Everything else has a default meant to need no per-model tuning; the [REC] parts (cost
normalisation, θ optimiser, hyper-prior form and ramp, thresholds) are our reconstruction, see
docs/methods/gates.md.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netrazor.errors import ConfigError
from netrazor.methods.gates.attach import attach_gates
from netrazor.methods.gates.estimators import ESTIMATORS
from netrazor.methods.gates.objective import GateObjective
from netrazor.methods.gates.priors import HYPER_PRIORS, get_hyper_prior

log = logging.getLogger(__name__)


def widths_of(model: nn.Module) -> dict[str, int]:
    """Output width of every Linear/Conv2d (and input width of a pixel-selecting first layer)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            out[name] = int(m.out_channels)
        elif isinstance(m, nn.Linear):
            out[name] = int(m.out_features)
            if hasattr(m, "input_index") or name not in out:
                out[f"{name}:in"] = int(m.in_features)
    return out


@dataclass
class GatesMethod:
    """Parsimonious learning with Bernoulli gates (METHODS.md §2). See the module docstring.

    Other knobs: ``estimator`` ("disarm" | "arm" | "straight-through") for unit/filter/input gates,
    ``layer_estimator`` ("flip" exact | the same choices), ``epochs`` (None: the adapter's recipe),
    ``units`` / ``filters`` / ``layers`` / ``inputs`` (what to gate), ``init_theta``,
    ``theta_lr`` (Adam on θ), ``threshold`` τ (remove θ < τ, freeze θ > 1 − τ),
    ``prune_every`` (steps), ``freeze_after`` (fraction of the gating phase), ``weight_prior`` λ,
    ``hyper_prior`` ("vertex" | "entropy"), ``hyper_strength``, ``hyper_ramp`` (fractions of the
    gating phase), ``cost_warmup`` (fraction of the gating phase over which κ ramps in),
    ``finetune`` (share of the epochs trained after θ is rounded: the deterministic small net
    without gate noise; 0 = round only at the end), ``per_example`` (gate samples per example),
    ``flip_per_step`` (layer gates flip-estimated per step, None = all; unbiased either way),
    ``cost_reference`` ("log", default: κ·log of the expected cost, so a structure pays its share
    of the *current* net — pressure grows as the net shrinks and the equilibrium does not depend
    on the starting width; "dense": linear, κ per whole starting net; "data": κ per parameter /
    N_train, the ELBO's KL/N form),
    ``weight_decay`` (None keeps the recipe's; the weight prior already decays gated weights),
    ``distill_alpha`` (0 = off): the fine-tuning of the rounded net distils ``run(..., teacher=)`` —
    a trained dense model — with loss alpha·T²·KL + (1 − alpha)·CE at ``distill_temperature`` T
    (Hinton et al. 2015; ``netrazor.train.losses``); the gating phase is unchanged,
    ``plots`` (write PNGs to the adapter's run_dir), ``seed``.
    """

    kappa: float = 0.2
    layer_vs_unit: float = 0.5
    # session 3: parameters only by default. Under the log cost, ρ = 0.5 priced a LeNet-5 filter at
    # its share of the MACs (up to ~20 % of the net each) and cut the convolutions to 7-6 in the
    # first two epochs, while the weights were still nearly random (docs/methods/gates.md)
    flops_vs_params: float = 0.0
    estimator: str = "disarm"
    layer_estimator: str = "flip"
    epochs: int | None = None
    units: bool = True
    filters: bool = True
    layers: bool = True
    inputs: bool = False
    init_theta: float = 0.9
    theta_lr: float = 0.01
    threshold: float = 0.01
    prune_every: int = 50
    # session 3: 0.5 (session 2: 0.8). Freezing the gates the data already holds at 1 halfway
    # through the gating phase stops the log cost, whose price per survivor grows as the net
    # shrinks, from eroding them: LeNet-300-100 95.3 % -> 92.7 % removed, val 2.78 -> 2.60 %
    freeze_after: float = 0.5
    weight_prior: float = 5e-4
    hyper_prior: str = "vertex"
    hyper_strength: float = 1.5
    hyper_ramp: tuple = (0.1, 1.0)
    cost_warmup: float = 0.05
    per_example: bool = True
    flip_per_step: int | None = None
    cost_reference: str = "log"
    finetune: float = 0.5
    weight_decay: float | None = None
    distill_alpha: float = 0.0
    distill_temperature: float = 4.0
    plots: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("layer_vs_unit", "flops_vs_params"):
            v = getattr(self, name)
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.kappa < 0:
            raise ValueError(f"kappa must be >= 0, got {self.kappa}")
        for name in ("estimator", "layer_estimator"):
            if str(getattr(self, name)).lower() not in ESTIMATORS:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {sorted(ESTIMATORS)}")
        if self.cost_reference not in ("log", "dense", "data"):
            raise ValueError(f"cost_reference must be 'log', 'dense' or 'data', got {self.cost_reference!r}")
        if not 0.0 <= self.finetune < 1.0:
            raise ValueError(f"finetune must be in [0, 1) (share of the epochs after θ is rounded), got {self.finetune}")
        if self.hyper_prior not in HYPER_PRIORS:
            raise ValueError(f"unknown hyper_prior {self.hyper_prior!r}; choose one of {sorted(HYPER_PRIORS)}")
        if not 0.0 < self.threshold < 0.5:
            raise ValueError(f"threshold must be in (0, 0.5), got {self.threshold}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"distill_alpha must be in [0, 1] (0 = no distillation), got {self.distill_alpha}")
        if self.distill_temperature <= 0:
            raise ValueError(f"distill_temperature must be > 0, got {self.distill_temperature}")
        if not 0.0 < self.init_theta <= 1.0:
            raise ValueError(f"init_theta must be in (0, 1], got {self.init_theta}")

    # ------------------------------------------------------------------------------------------
    def objective(self, gs, total_steps: int | None, label_smoothing: float = 0.0,
                  n_train: int | None = None, finetune_loss=None) -> GateObjective:
        return GateObjective(
            gs, kappa=self.kappa, layer_vs_unit=self.layer_vs_unit, flops_vs_params=self.flops_vs_params,
            estimator=self.estimator, layer_estimator=self.layer_estimator, weight_prior=self.weight_prior,
            hyper_prior=get_hyper_prior(self.hyper_prior, self.hyper_strength, tuple(self.hyper_ramp)),
            theta_lr=self.theta_lr, threshold=self.threshold, prune_every=self.prune_every,
            freeze_after=self.freeze_after, total_steps=total_steps, label_smoothing=label_smoothing,
            cost_warmup=self.cost_warmup, flip_per_step=self.flip_per_step, cost_reference=self.cost_reference,
            n_train=n_train, finetune=self.finetune, finetune_loss=finetune_loss, seed=self.seed,
        )

    @staticmethod
    def uses_teacher(params: dict) -> bool:
        """Whether a recipe stage with these knobs learns from the recipe's teacher."""
        return float(params.get("distill_alpha") or 0.0) > 0

    def run(self, model: nn.Module, adapter, teacher: nn.Module | None = None) -> tuple[nn.Module, dict]:
        """Gate, prune and fine-tune ``model``; ``teacher`` (a trained model, used when ``distill_alpha`` > 0)
        is distilled into the rounded net during fine-tuning."""
        from netrazor.measure import count_macs, count_params
        from netrazor.train.losses import distillation_loss_fn

        # the recipe's smoothing, for the gated loss and the distillation's label term alike
        label_smoothing = float(getattr(adapter.train_config, "label_smoothing", 0.0))
        finetune_loss = None
        if self.distill_alpha > 0:
            if teacher is None:
                raise ConfigError("distill_alpha > 0 needs a trained teacher: pass run(model, adapter, teacher=dense) "
                                  "or set distill_alpha=0.")
            if self.finetune <= 0:
                raise ConfigError("distillation acts in the fine-tuning of the rounded net; with finetune=0 it would "
                                  "never run: set finetune > 0 (e.g. 0.5) or distill_alpha=0.")
            finetune_loss = distillation_loss_fn(teacher, temperature=self.distill_temperature, alpha=self.distill_alpha,
                                                 label_smoothing=label_smoothing)

        torch.manual_seed(self.seed)
        config = adapter.train_config
        epochs = int(self.epochs if self.epochs is not None else config.epochs)
        if epochs < 1:
            raise ConfigError(f"gates need at least one training epoch, got {epochs}; pass epochs >= 1.")
        shape = adapter.input_shape
        model.eval()
        params_before, macs_before = count_params(model), count_macs(model, shape)
        widths_before = widths_of(model)
        example = adapter.example_input()
        gs = attach_gates(model, example, units=self.units, filters=self.filters, layers=self.layers,
                          inputs=self.inputs, init=self.init_theta, per_example=self.per_example)
        gate_sets = {name: {"kind": s.kind, "width_dense": s.width_dense} for name, s in gs.structures.items()}
        steps_per_epoch = -(-len(adapter.data.train) // int(config.batch_size))
        obj = self.objective(gs, epochs * steps_per_epoch, label_smoothing,
                             n_train=len(adapter.data.train), finetune_loss=finetune_loss)
        overrides: dict[str, Any] = {}
        if self.weight_decay is not None:
            overrides["weight_decay"] = float(self.weight_decay)
        started = time.perf_counter()
        history = adapter.train(model, epochs=epochs, callbacks=[obj], loss_fn=obj.loss_fn, **overrides)
        train_seconds = time.perf_counter() - started
        # θ's convergence is judged before rounding: at the end of the gating phase if there was one
        converged = obj.converged_before_rounding if obj.rounded else obj.converged_fraction()
        theta_final = {n: obj.gs.effective_theta(n).detach().cpu().tolist() for n in obj.gs.gates}
        model = gs.finalize()
        model.eval()
        val = adapter.evaluate(model, "val")
        test = adapter.evaluate(model, "test")
        record = {
            "method": "gates",
            "knobs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()},
            "widths_before": widths_before,
            "widths_after": widths_of(model),
            "gate_sets": gate_sets,
            "params_before": params_before, "params_after": count_params(model),
            "macs_before": macs_before, "macs_after": count_macs(model, shape),
            "val_error": val["error"], "test_error": test["error"],
            "train_seconds": train_seconds,
            "epoch_seconds": [row.get("seconds") for row in history],
            "gate_epochs": obj.history,
            "removals": obj.removals,
            "theta_trajectory": obj.trajectory,
            "theta_final": theta_final,
            "converged_fraction": converged,
            # step at which θ was rounded (None: only at the end); later steps fine-tuned the small net
            "rounded_at_step": obj.gate_steps if obj.rounded else None,
            # layer gates: residual sections removed, and the ReLUs that became the identity with them
            "removed_sections": list(gs.removed_sections),
            "idle_rectifiers": list(gs.idle_rectifiers),
            "history": history,
        }
        if self.plots and adapter.run_dir is not None:
            from netrazor.methods.gates.plots import save_plots

            record["plots"] = [str(p) for p in save_plots(record, Path(adapter.run_dir))]
        return model, record
