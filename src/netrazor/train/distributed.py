"""DistributedDataParallel under ``torchrun``, with no code change for the user.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. When they are
present the Trainer calls :func:`init_distributed`, which starts the process group once per
process (gloo on CPU, nccl on CUDA) and tears it down at exit. Without them everything is a
plain single process (rank 0 of 1).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist

from netrazor.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    """Rank information from the torchrun environment (single process when absent)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    try:
        return DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as exc:
        raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({exc}); launch with torchrun.") from exc


def init_distributed(device: str | torch.device = "cpu") -> tuple[DistInfo, torch.device]:
    """Start the process group if torchrun asked for one; return rank info and this rank's device."""
    info = env_dist_info()
    device = torch.device(device)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not info.enabled:
        return info, device
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
        atexit.register(_shutdown)
        log.info("process group started: rank %d of %d (%s)", info.rank, info.world_size, backend)
    return info, device


def _shutdown() -> None:
    # Wait for every rank before tearing down: rank 0 hosts the rendezvous store, and a rank
    # still talking to it when it vanishes aborts ("terminate called without an active exception").
    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def exit_process(code: int = 0) -> NoReturn:
    """End a torchrun worker now: barrier, destroy the process group, flush logs and stdio, then
    ``os._exit(code)``, skipping interpreter finalization.

    Why: about one torchrun run in ten here ended with SIGABRT *after* every rank had finished,
    from native worker threads (gloo, the autograd engine) racing the GIL teardown during
    finalization (pytorch/pytorch#190489, #179291). Nothing useful happens in finalization once the
    work is written, so a worker script ends with ``exit_process()``; ``netrazor``'s CLI does so
    itself whenever it ran distributed. Other atexit handlers are skipped: flush what you own first.
    """
    _shutdown()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing left to flush into
            pass
    os._exit(code)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over all ranks (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_text(text: str, device: torch.device, max_len: int = 512) -> str:
    """Rank 0's string on every rank (e.g. a run id), sent as bytes in a tensor — no pickle."""
    if not (dist.is_available() and dist.is_initialized()):
        return text
    raw = text.encode("utf-8")[:max_len]
    buf = torch.zeros(max_len + 1, dtype=torch.int32, device=device)
    buf[0] = len(raw)
    buf[1 : 1 + len(raw)] = torch.tensor(list(raw), dtype=torch.int32, device=device)
    dist.broadcast(buf, src=0)
    n = int(buf[0])
    return bytes(int(b) for b in buf[1 : 1 + n].tolist()).decode("utf-8")


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
