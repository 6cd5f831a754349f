"""Candidate evaluation in worker processes, for models whose batched evaluation does not fit.

``WorkerFitness`` shards each call's candidates over ``workers`` forked processes. Nothing is
pickled to start them: the inner evaluator (``"looped"``: one forward per candidate, memory of a
single forward; or ``"delta"``) is built in the parent and the processes are *forked* after it, so
each inherits the student, the evaluation batch, the teacher logits and the inner evaluator's
caches copy-on-write. Per call, the candidates go through a shared-memory bool buffer
(``share_memory_``) and only ``(start, stop)`` ranges and the small fitness vectors cross the
pipes. The random generator stays in the parent, so results do not depend on the number of
workers (fitness values equal the inner evaluator's).

The pool lives for one DE step (the student changes between steps): ``EvolutionMethod`` calls
``close()`` after the step. Each worker runs single-threaded (``torch.set_num_threads(1)``):
parallelism comes from the processes, and intra-op thread pools are not fork-safe.

Needs the ``fork`` start method (Linux/macOS); elsewhere ``ConfigError`` says to use
``evaluator="looped"`` instead. Choose it with ``EvolutionMethod(evaluator="workers", workers=N)``.
"""

from __future__ import annotations

import multiprocessing as mp

import torch
from torch import nn

from netrazor.errors import ConfigError
from netrazor.methods.evolution.divergence import Divergence

_INHERITED: dict = {}  # set in the parent right before the fork; read by the forked workers


def _init_worker() -> None:
    torch.set_num_threads(1)


def _evaluate_range(args: tuple[int, int, int]) -> torch.Tensor:
    key, start, stop = args
    inner, buffer = _INHERITED[key]
    return inner(buffer[start:stop].clone())


class WorkerFitness:
    """Fitness of candidate zero-sets sharded over forked worker processes (see module docstring)."""

    def __init__(self, model: nn.Module, layer_name: str, x: torch.Tensor, teacher_logits: torch.Tensor,
                 divergence: Divergence, workers: int = 2, inner: str = "looped", max_candidates: int = 256,
                 chunk_size: int | None = None) -> None:
        from netrazor.methods.evolution.fitness import make_fitness

        if "fork" not in mp.get_all_start_methods():
            raise ConfigError("evaluator='workers' needs the 'fork' start method, which this platform lacks; "
                              "use evaluator='looped' (same fitness, one process).")
        if workers < 1 or inner not in ("looped", "delta"):
            raise ConfigError(f"workers must be >= 1 and inner 'looped' or 'delta', got {workers}/{inner!r}.")
        self.workers, self.max_candidates = workers, max_candidates
        self.inner = make_fitness(inner, model, layer_name, x, teacher_logits, divergence, chunk_size)
        numel = model.get_submodule(layer_name).weight.numel()
        self.buffer = torch.zeros(max_candidates, numel, dtype=torch.bool).share_memory_()
        self.key = id(self)
        _INHERITED[self.key] = (self.inner, self.buffer)
        self.pool = mp.get_context("fork").Pool(workers, initializer=_init_worker)

    def __call__(self, zero_sets: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, zero_sets.shape[0], self.max_candidates):  # the buffer bounds one round
            part = zero_sets[start:start + self.max_candidates]
            n = part.shape[0]
            self.buffer[:n] = part.cpu()
            step = -(-n // self.workers)
            ranges = [(self.key, s, min(n, s + step)) for s in range(0, n, step)]
            out.extend(self.pool.map(_evaluate_range, ranges))
        return torch.cat(out).to(zero_sets.device if zero_sets.is_cuda else "cpu")

    def close(self) -> None:
        if getattr(self, "pool", None) is not None:
            self.pool.close()
            self.pool.join()
            self.pool = None
        _INHERITED.pop(getattr(self, "key", None), None)

    def __del__(self) -> None:  # a forgotten close() must not leave processes behind
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.terminate()
        _INHERITED.pop(getattr(self, "key", None), None)
