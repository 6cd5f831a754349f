"""Directed evolution (Franca-Neto 2022): sparsify a student against its frozen teacher.

What the abstract fixes [ABS]: the trained net is the teacher; the student is evolved to per-layer
sparsity targets while keeping the teacher–student divergence minimal; a parameter's relevance is
measured directly by tentatively zeroing it; evolution avoids enumerating candidate sets; magnitude
or Hessian criteria can be nested. Everything else here is our reconstruction [REC] (METHODS.md §4),
with every rule exposed as a knob:

- Schedule: ``cycles`` cycles; in cycle c each layer moves geometrically from its starting density
  d0 to its target dT: d_c = d0 · (dT/d0)^(c/cycles) (each cycle removes the same fraction of the
  survivors). Layers are processed in forward-definition order (``named_modules``) within a cycle
  — interleaved cycles, so the fine-tune after each cycle heals all layers together.
- Step: a layer's cut for the cycle is split into evolutionary steps of at most ``candidate_size``
  weights (int, or fraction of the layer's size; ``None`` = one step per layer per cycle). Small
  steps matter: with k = half a layer the pool is the whole layer and no set beats the greedy one;
  at 5 % per step the best set measured about half the greedy set's divergence on our tiny CNN.
- Search per step: pool = the ``pool_factor``·k least salient survivors (``candidate_pool``:
  magnitude or Fisher-diagonal OBD); ``population`` candidate k-subsets (one of them the greedy
  one), ``generations`` rounds of elite selection (``elite`` kept), uniform set crossover and swap
  mutation (``mutation_rate``), each candidate scored by the divergence on a fixed evaluation
  batch; the best set is committed (its weights zeroed).
- Stop: a layer stops at its target, or — when ``tolerance`` is set — as soon as its best candidate's
  divergence exceeds ``tolerance`` (that step is not committed; the layer stays denser than asked).
- Fine-tune: ``finetune_epochs`` epochs of distillation (``alpha``·T²·KL at ``temperature`` +
  (1 − ``alpha``)·CE) through ``adapter.train`` after every cycle, pruned weights held at zero.
- Evaluation batch: ``eval_size`` examples drawn with ``seed`` from ``eval_split`` ("val" by default,
  or "train"; the test split is refused).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from netrazor.errors import ConfigError
from netrazor.methods.evolution import genetics
from netrazor.methods.evolution.distill import ContinuedSchedule, distill_loss_fn, finetune_with_masks
from netrazor.methods.evolution.divergence import Divergence, resolve_divergence
from netrazor.methods.evolution.fitness import EVALUATORS, make_fitness
from netrazor.methods.evolution.memory import choose_evaluator
from netrazor.methods.evolution.saliency import candidate_pool, fisher_diagonal, saliency
from netrazor.methods.evolution.targets import keep_counts
from netrazor.methods.masks import apply_masks, densities, density, masks_from_weights, prunable_layers

log = logging.getLogger(__name__)

EVAL_SPLITS = ("val", "train")
FINETUNE_SCHEDULES = ("restart", "continued")


TEACHERS = ("input", "recipe")


class KnobError(ConfigError, ValueError):
    """A bad knob value: a ``ConfigError`` for the CLI, a ``ValueError`` for the recipe validator
    (``pipeline.stages.validate_stages`` builds methods from recipes and catches ValueError)."""


@dataclass
class EvolutionMethod:
    """Directed-evolution sparsification; ``run(model, adapter) -> (student, record)``.

    Knobs (defaults are ours [REC]; see the module docstring for the rules they drive):
      targets          density to keep: {layer name: density} or one global density (0..1).
      split_rule       how a global density is split over layers: "magnitude" | "uniform".
      min_density      floor per layer under the "magnitude" split.
      layers           names of the Linear/Conv layers to sparsify (default: all of them).
      cycles           evolve → fine-tune rounds.
      population, elite, generations, mutation_rate, pool_factor   the evolutionary search.
      candidate_size   max weights zeroed per evolutionary step (int, or fraction of the layer).
      temperature      softmax temperature of the KL divergence and of the distillation.
      divergence       "kl" | "mse" | callable(student [P,B,C], teacher [B,C]) -> [P].
      tolerance        stop a layer when its best divergence exceeds this (None = never).
      candidate_pool   "magnitude" | "hessian" (Fisher-diagonal OBD saliency).
      finetune_epochs  distillation epochs after each cycle (0 = none).
      finetune_lr      learning rate of the fine-tunes (None: finetune_lr_scale x the recipe's lr).
      finetune_lr_scale  [REC] 0.2: the T²-scaled distillation loss at a from-scratch lr diverged
                       (LeNet-5, recipe lr 0.05: val accuracy 98.6 % -> 9 % after one epoch).
      alpha            distillation weight of the fine-tune loss (1 = pure KL, no labels).
      teacher          "input" (default: the model entering the method is the teacher, as in the paper) |
                       "recipe": the trained model passed as ``run(..., teacher=)`` — in a recipe, its
                       ``teacher:`` — judges the candidates and is distilled in the fine-tunes, while the
                       student still starts from the input model (e.g. a gated net against its dense parent).
      finetune_schedule  [REC] "restart" (default): each cycle's fine-tune runs the recipe's
                       schedule of its own (cosine decays to 0 every cycle, same shuffle order);
                       "continued": the cycles' fine-tunes are consecutive slices of one schedule
                       of cycles x finetune_epochs epochs (same learning rates and example orders
                       as one uninterrupted run of that length).
      eval_split, eval_size   the fixed evaluation batch (never the test split).
      evaluator        "delta" (default: weight deltas on the touched channels, see ``delta``) |
                       "vectorised" (vmap over the fx suffix) | "looped" (reference, one forward
                       per candidate) | "workers" (looped, sharded over ``workers`` forked
                       processes: for models too large for batched evaluation). Same fitness
                       values up to float rounding.
      workers          processes of the "workers" evaluator.
      memory_budget_mb [REC] None (default: no switch) or MiB one step's evaluator may hold: a
                       layer whose batched evaluator ("delta"/"vectorised") is estimated above it
                       (``memory.step_bytes``: activations of one forward, the layer's im2col and
                       the evaluator's capped buffers) is searched with "workers" instead; the
                       record's per-layer ``evaluator`` / ``evaluator_switch`` say which and why.
      chunk_size       candidates per vmap call (None: sized from the layer's output).
      seed             same seed, same data, same machine → same masks.
      progress         optional callable receiving one dict per step and per cycle (default: the
                       adapter's ``progress``, so the CLI shows one bar per layer).
    """

    targets: dict[str, float] | float = 0.1
    split_rule: str = "magnitude"
    min_density: float = 0.01
    layers: Sequence[str] | None = None
    cycles: int = 4
    population: int = 32
    elite: int = 8
    generations: int = 5
    candidate_size: int | float | None = 0.05
    pool_factor: float = 3.0
    mutation_rate: float = 0.1
    temperature: float = 4.0
    divergence: str | Divergence = "kl"
    tolerance: float | None = None
    candidate_pool: str = "magnitude"
    finetune_epochs: int = 1
    finetune_lr: float | None = None
    finetune_lr_scale: float = 0.2
    alpha: float = 1.0
    teacher: str = "input"
    finetune_schedule: str = "restart"
    eval_split: str = "val"
    eval_size: int = 256
    evaluator: str = "delta"
    chunk_size: int | None = None
    workers: int = 2
    memory_budget_mb: float | None = None
    seed: int = 0
    progress: Callable[[dict], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from netrazor.methods.evolution.divergence import DIVERGENCES
        from netrazor.methods.evolution.saliency import POOLS
        from netrazor.methods.evolution.targets import SPLIT_RULES

        checks = [
            (self.eval_split in EVAL_SPLITS, f"eval_split={self.eval_split!r} is not allowed; use 'val' (default) or "
             "'train' — the test split is only for the final number."),
            (self.evaluator in EVALUATORS, f"unknown evaluator {self.evaluator!r}; use one of {', '.join(EVALUATORS)}."),
            (self.population >= 1 and 1 <= self.elite <= self.population,
             f"need population >= 1 and 1 <= elite <= population, got {self.population}/{self.elite}."),
            (self.generations >= 1 and self.cycles >= 1, "generations and cycles must be >= 1; pass positive integers."),
            (self.pool_factor >= 1, f"pool_factor must be >= 1 (the pool holds at least k weights), got {self.pool_factor}."),
            (0 <= self.mutation_rate <= 1, f"mutation_rate must be in [0, 1], got {self.mutation_rate}."),
            (self.split_rule in SPLIT_RULES, f"unknown split_rule {self.split_rule!r}; choose one of {', '.join(SPLIT_RULES)}."),
            (self.candidate_pool in POOLS, f"unknown candidate_pool {self.candidate_pool!r}; choose one of {', '.join(POOLS)}."),
            (callable(self.divergence) or self.divergence in DIVERGENCES,
             f"unknown divergence {self.divergence!r}; choose one of {', '.join(DIVERGENCES)} or pass a callable."),
            (self.finetune_schedule in FINETUNE_SCHEDULES, f"unknown finetune_schedule {self.finetune_schedule!r}; "
             f"choose one of {', '.join(FINETUNE_SCHEDULES)}."),
            (self.teacher in TEACHERS, f"teacher={self.teacher!r}: use 'input' (the model entering the method) "
             "or 'recipe' (the trained model passed as run(..., teacher=))."),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}; 4.0 is the usual choice."),
            (self.eval_size >= 1 and self.finetune_epochs >= 0, "eval_size must be >= 1 and finetune_epochs >= 0."),
            (isinstance(self.workers, int) and self.workers >= 1, f"workers must be an int >= 1, got {self.workers!r}."),
            (self.memory_budget_mb is None or isinstance(self.memory_budget_mb, (int, float)) and self.memory_budget_mb > 0,
             f"memory_budget_mb must be None or a number of MiB > 0, got {self.memory_budget_mb!r}."),
        ]
        densities = self.targets.values() if isinstance(self.targets, dict) else [self.targets]
        checks.append((all(isinstance(d, (int, float)) and 0 <= d <= 1 for d in densities),
                       f"targets must be densities in [0, 1] (fraction of weights kept), got {self.targets!r}."))
        for ok, message in checks:
            if not ok:
                raise KnobError(message)

    # ------------------------------------------------------------------ helpers

    def _finetune_lr(self, adapter: Any) -> float | None:
        if self.finetune_lr is not None:
            return self.finetune_lr
        recipe_lr = getattr(getattr(adapter, "train_config", None), "lr", None)
        return None if recipe_lr is None else self.finetune_lr_scale * recipe_lr

    def _continued(self, cycle: int) -> ContinuedSchedule | None:
        if self.finetune_schedule != "continued":
            return None
        return ContinuedSchedule((cycle - 1) * self.finetune_epochs, self.cycles * self.finetune_epochs)

    def eval_batch(self, data) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fixed evaluation batch: ``(x normalised, y, indices into data.<eval_split>)``."""
        split = getattr(data, self.eval_split)
        g = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(len(split), generator=g)[: min(self.eval_size, len(split))]
        idx, _ = torch.sort(idx)
        return data.normalize(split.images[idx]), split.labels[idx], idx

    def _emit(self, adapter: Any, event: dict) -> None:
        # Our own callable first, else the adapter's (the CLI puts its progress renderer there).
        sink = self.progress or getattr(adapter, "progress", None)
        if sink is not None:
            sink(event)

    def cycle_goal(self, numel: int, start_alive: int, target: int, cycle: int) -> int:
        """Non-zeros a layer keeps after ``cycle``: geometric from its start to its target."""
        d0, dT = start_alive / numel, target / numel
        if cycle == self.cycles or d0 == 0:
            return target
        return max(target, int(round(numel * d0 * (dT / d0) ** (cycle / self.cycles))))

    def schedule_steps(self, model: nn.Module) -> dict[str, int]:
        """Evolutionary steps per layer that ``run`` takes on ``model`` (the schedule only, no search)."""
        layers = prunable_layers(model, self.layers)
        counts = keep_counts(layers, self.targets, self.split_rule, self.min_density)
        steps = {}
        for name, layer in layers.items():
            numel, start = layer.weight.numel(), int((layer.weight != 0).sum())
            alive, steps[name] = start, 0
            for cycle in range(1, self.cycles + 1):
                goal = self.cycle_goal(numel, start, counts[name], cycle)
                while alive > goal:
                    alive -= self._step_size(numel, alive - goal)
                    steps[name] += 1
        return steps

    def _step_size(self, layer_numel: int, remaining: int) -> int:
        if self.candidate_size is None:
            return remaining
        if isinstance(self.candidate_size, float):
            return max(1, min(remaining, int(round(self.candidate_size * layer_numel))))
        return max(1, min(remaining, int(self.candidate_size)))

    # ------------------------------------------------------------------ search of one step
    def evolve_step(self, student: nn.Module, layer_name: str, alive: torch.Tensor, score: torch.Tensor, k: int,
                    x: torch.Tensor, teacher_logits: torch.Tensor, divergence: Divergence,
                    g: torch.Generator, evaluator: str | None = None) -> dict:
        """Search the best set of ``k`` weights to zero in ``layer_name``; returns the best set
        (flat indices), its divergence, the greedy set's divergence and counters. Does not commit.
        ``evaluator``: this step's evaluator (default: the ``evaluator`` knob)."""
        pool = candidate_pool(score, alive, k, self.pool_factor)
        fitness = make_fitness(evaluator or self.evaluator, student, layer_name, x, teacher_logits, divergence,
                               self.chunk_size, self.workers, pool=pool)
        try:
            return self._search(fitness, pool, k, alive.numel(), g)
        finally:
            close = getattr(fitness, "close", None)  # worker processes live for one step
            if close is not None:
                close()

    def _search(self, fitness, pool: torch.Tensor, k: int, numel: int, g: torch.Generator) -> dict:
        def as_zero_sets(members: torch.Tensor) -> torch.Tensor:
            zs = torch.zeros(members.shape[0], numel, dtype=torch.bool)
            zs[:, pool] = members
            return zs

        memo: dict[bytes, float] = {}  # fitness of every set scored in this step (fixed batch)
        counter = {"evaluated": 0, "proposed": 0}

        def score_sets(members: torch.Tensor) -> torch.Tensor:
            # Children often repeat a parent or each other once the population converges: score
            # each distinct set once.
            keys = [bytes(row.numpy().tobytes()) for row in members]
            todo = [i for i, key in enumerate(keys) if key not in memo and key not in keys[:i]]
            if todo:
                values = fitness(as_zero_sets(members[todo]))
                for i, v in zip(todo, values.tolist()):
                    memo[keys[i]] = v
            counter["evaluated"] += len(todo)
            counter["proposed"] += len(keys)
            return torch.tensor([memo[key] for key in keys], dtype=torch.float64)

        pop = genetics.initial_population(pool.numel(), k, self.population, g)
        fit = score_sets(pop)
        greedy_div = float(fit[0])
        elite = min(self.elite, pop.shape[0])
        if pool.numel() > k:  # otherwise there is exactly one candidate: nothing to evolve
            for _ in range(self.generations - 1):
                pop, elite_fit = genetics.next_generation(pop, fit, elite, k, self.mutation_rate, g)
                children = pop[elite:]
                fit = torch.cat([elite_fit, score_sets(children)]) if len(children) else elite_fit
        best = int(torch.argmin(fit))  # first minimum: deterministic
        return {"zero": pool[pop[best]], "divergence": float(fit[best]), "greedy_divergence": greedy_div,
                "evaluated": counter["evaluated"], "proposed": counter["proposed"], "pool": int(pool.numel())}

    # ------------------------------------------------------------------ the method
    @staticmethod
    def uses_teacher(params: dict) -> bool:
        """Whether a recipe stage with these knobs learns from the recipe's teacher."""
        return params.get("teacher", "input") == "recipe"

    def run(self, model: nn.Module, adapter: Any, teacher: nn.Module | None = None) -> tuple[nn.Module, dict]:
        started = time.perf_counter()
        device = getattr(adapter, "device", "cpu")
        if self.teacher == "recipe" and teacher is None:
            raise ConfigError("teacher='recipe' needs a trained model: pass run(model, adapter, teacher=dense) "
                              "(in a recipe: add `teacher:`), or use teacher='input'.")
        if self.teacher == "input" and teacher is not None:
            raise ConfigError("a teacher was passed but teacher='input' distils from the input model; "
                              "set teacher='recipe' to use it.")
        teacher = copy.deepcopy(teacher if teacher is not None else model).to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        student = copy.deepcopy(model).to(device).eval()
        layers = prunable_layers(student, self.layers)
        counts = keep_counts(layers, self.targets, self.split_rule, self.min_density)
        masks = masks_from_weights(layers)
        divergence = resolve_divergence(self.divergence, self.temperature)
        x, y, idx = self.eval_batch(adapter.data)
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            teacher_logits = teacher(x)
        g = torch.Generator().manual_seed(self.seed)
        loss_fn = distill_loss_fn(teacher, self.temperature, self.alpha,
                                  label_smoothing=getattr(adapter.train_config, "label_smoothing", 0.0))
        start_alive = {n: int(m.sum()) for n, m in masks.items()}
        for n in layers:
            if counts[n] > start_alive[n]:
                log.info("layer %s already holds %d non-zeros, below its target %d; left as is", n, start_alive[n], counts[n])
        stopped: dict[str, str] = {}
        steps: list[dict] = []
        cycles: list[dict] = []
        total_evaluated, search_seconds = 0, 0.0
        before = self._snapshot(student, x, teacher_logits, divergence, adapter)
        nonzero_before = _nonzero(student)
        # per layer: the asked evaluator, or worker processes when it is estimated over the budget
        budget = None if self.memory_budget_mb is None else self.memory_budget_mb * 2**20
        chosen = {n: choose_evaluator(self.evaluator, student, n, x, budget, self.workers) for n in layers}
        for n, (kind, _, why) in chosen.items():
            if why is not None:
                log.info("layer %s: %s; searching it with %d worker processes", n, why, self.workers)

        for cycle in range(1, self.cycles + 1):
            fisher = None
            if self.candidate_pool == "hessian":
                fisher = fisher_diagonal(student, layers, adapter.data, seed=self.seed + cycle, device=device)
            student.eval()
            for name, layer in layers.items():
                if name in stopped:
                    continue
                numel = layer.weight.numel()
                goal = self.cycle_goal(numel, start_alive[name], counts[name], cycle)
                while int(masks[name].sum()) > goal and name not in stopped:
                    alive_now = int(masks[name].sum())
                    k = self._step_size(numel, alive_now - goal)
                    score = saliency(layer.weight, self.candidate_pool, None if fisher is None else fisher[name])
                    t0 = time.perf_counter()
                    found = self.evolve_step(student, name, masks[name], score, k, x, teacher_logits, divergence, g,
                                             evaluator=chosen[name][0])
                    seconds = time.perf_counter() - t0
                    search_seconds += seconds
                    total_evaluated += found["evaluated"]
                    committed = self.tolerance is None or found["divergence"] <= self.tolerance
                    if committed:
                        masks[name].view(-1)[found["zero"]] = False
                        apply_masks(layers, {name: masks[name]})
                    else:
                        stopped[name] = f"divergence {found['divergence']:.4g} > tolerance {self.tolerance} in cycle {cycle}"
                    with torch.no_grad():  # one extra forward: the committed student's accuracy on x_B
                        batch_acc = float((student(x).argmax(1) == y).float().mean())
                    step = {"cycle": cycle, "layer": name, "k": k, "pool": found["pool"], "committed": committed,
                            "eval_batch_accuracy": batch_acc,
                            "divergence": found["divergence"], "greedy_divergence": found["greedy_divergence"],
                            "evaluated": found["evaluated"], "proposed": found["proposed"], "seconds": seconds,
                            "density": density(masks[name]), "overall_density": self._overall(masks)}
                    steps.append(step)
                    # task/completed/total drive one CLI bar per layer: weights removed of those to remove.
                    self._emit(adapter, {"event": "step", "task": f"evolution {name}",
                                         "completed": start_alive[name] - int(masks[name].sum()),
                                         "total": max(0, start_alive[name] - counts[name]), **step})
            history = finetune_with_masks(adapter, student, masks, self.finetune_epochs, loss_fn, self._finetune_lr(adapter),
                                          continued=self._continued(cycle))
            student.eval()
            snap = self._snapshot(student, x, teacher_logits, divergence, adapter)
            cyc = {"cycle": cycle, "overall_density": self._overall(masks),
                   "densities": densities(masks),
                   "finetune_epochs": len(history), **snap}
            cycles.append(cyc)
            self._emit(adapter, {"event": "cycle", "task": "evolution cycles", "completed": cycle,
                                 "total": self.cycles, **{k: v for k, v in cyc.items() if k != "densities"}})
            log.info("cycle %d: density %.4f divergence %.4g val acc %s", cycle, cyc["overall_density"],
                     snap["divergence"], snap.get("val_accuracy"))
            if len(stopped) == len(layers):
                break

        record = {
            "method": "evolution",
            "knobs": self._knobs(),
            "eval_batch": {"split": self.eval_split, "size": int(len(idx)), "seed": self.seed},
            "layers": {n: {"numel": layers[n].weight.numel(), "target_density": counts[n] / layers[n].weight.numel(),
                           "target_nonzero": counts[n], "nonzero": int(masks[n].sum()), "density": density(masks[n]),
                           "reached": int(masks[n].sum()) <= counts[n], "stopped": stopped.get(n),
                           "evaluator": chosen[n][0], "evaluator_bytes_estimate": chosen[n][1],
                           "evaluator_switch": chosen[n][2]}
                       for n in layers},
            "overall_density": self._overall(masks),
            # Unstructured zeros: parameter count, MACs and dense latency do not change; the
            # non-zero count is what shrinks (and what the codec stores).
            "params": sum(p.numel() for p in student.parameters()),
            "nonzero_before": nonzero_before,
            "nonzero_after": _nonzero(student),
            "before": before,
            "after": cycles[-1] if cycles else before,
            "steps": steps,
            "cycles": cycles,
            "candidates_evaluated": total_evaluated,
            "search_seconds": search_seconds,
            "candidates_per_second": total_evaluated / search_seconds if search_seconds > 0 else None,
            "finetune_epochs_total": sum(c["finetune_epochs"] for c in cycles),
            "compress_seconds": time.perf_counter() - started,
        }
        return student, record

    # ------------------------------------------------------------------ bookkeeping
    @staticmethod
    def _overall(masks: dict[str, torch.Tensor]) -> float:
        return sum(int(m.sum()) for m in masks.values()) / max(1, sum(m.numel() for m in masks.values()))

    @torch.no_grad()
    def _snapshot(self, student: nn.Module, x, teacher_logits, divergence: Divergence, adapter) -> dict:
        logits = student(x)
        return {
            "divergence": float(divergence(logits.unsqueeze(0), teacher_logits)[0]),
            "val_accuracy": float(adapter.evaluate(student, "val")["accuracy"]),
        }

    def _knobs(self) -> dict:  # noqa: D401 - JSON-able copy of the knobs
        knobs = {k: v for k, v in asdict(self).items() if k != "progress"}
        if callable(self.divergence):
            knobs["divergence"] = getattr(self.divergence, "__name__", "callable")
        return knobs


def _nonzero(model: nn.Module) -> int:
    return sum(int((p != 0).sum()) for p in model.parameters())
