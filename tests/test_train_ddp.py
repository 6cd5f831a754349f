"""DDP under torchrun: 2 CPU processes (gloo) follow the same loss curve as one process with the
same global batch. Data-parallel SGD with equal per-rank batches averages the per-rank gradients,
which equals the global-batch gradient up to float rounding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

from netrazor.data import make_synthetic
from netrazor.train import TrainConfig, Trainer

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from torch import nn
    torch.set_num_threads(1)
    from netrazor.data import make_synthetic
    from netrazor.io import save_tensors
    from netrazor.train import TrainConfig, Trainer

    out = sys.argv[1]
    torch.manual_seed(11)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 4))
    data = make_synthetic(n_train=512, n_val=128, n_test=32, seed=2)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.05, nesterov=True, weight_decay=1e-4)
    trainer = Trainer(model, data, cfg, run_dir=os.path.join(out, "run"))
    history = trainer.fit()
    assert trainer.dist.world_size == 2 and trainer.train_loader.batch_size == 32
    rank = trainer.dist.rank
    with open(os.path.join(out, f"history{rank}.json"), "w") as fh:
        json.dump(history, fh)
    save_tensors(os.path.join(out, f"weights{rank}.safetensors"), dict(model.state_dict()))

    # A NaN on rank 1 only must stop every rank with TrainingError (no rank left hanging).
    from netrazor.errors import TrainingError
    from netrazor.train import Callback

    class PoisonRank1(Callback):
        def extra_loss(self, trainer):
            if trainer.dist.rank == 1 and trainer.step == 3:
                return torch.tensor(float("nan"))
            return None

    try:
        Trainer(model, data, cfg, callbacks=[PoisonRank1()]).fit()
    except TrainingError as exc:
        with open(os.path.join(out, f"nan{rank}.txt"), "w") as fh:
            fh.write(str(exc))
    from netrazor.train.distributed import exit_process
    exit_process(0)  # the documented end of a worker script (skips the racy interpreter finalization)
    """
)


def single_process_history():
    torch.manual_seed(11)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 4))
    data = make_synthetic(n_train=512, n_val=128, n_test=32, seed=2)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.05, nesterov=True, weight_decay=1e-4)
    return Trainer(model, data, cfg).fit(), model


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built in")
def test_two_process_ddp_matches_single_process(tmp_path):
    from netrazor.io import load_tensors

    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    outputs = [f"{stem}{rank}.{ext}" for stem, ext in (("history", "json"), ("weights", "safetensors"), ("nan", "txt"))
               for rank in (0, 1)]
    finished = all((tmp_path / name).exists() for name in outputs)
    if proc.returncode != 0 and finished and "Signal 6 (SIGABRT)" in proc.stdout + proc.stderr:
        # Was ~1 run in 10 before exit_process(): gloo/autograd threads abort while the interpreter
        # finalizes, after every rank finished and wrote its results (the last file is written after
        # the NaN scenario). exit_process() skips finalization; should it still happen, the parity
        # below is unaffected and the warning makes it visible.
        warnings.warn("torchrun reported SIGABRT at process exit after all ranks finished")
    else:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    h0 = json.loads((tmp_path / "history0.json").read_text())
    h1 = json.loads((tmp_path / "history1.json").read_text())
    ref, ref_model = single_process_history()

    # both ranks report the same (all-reduced) metrics
    assert [r["train_loss"] for r in h0] == pytest.approx([r["train_loss"] for r in h1], rel=1e-9)
    # the DDP loss curve follows single-process training at the same global batch
    assert [r["train_loss"] for r in h0] == pytest.approx([r["train_loss"] for r in ref], rel=1e-4)
    assert [r["val_acc"] for r in h0] == pytest.approx([r["val_acc"] for r in ref], abs=1 / 128 + 1e-9)
    # replicas stay identical, and close to the single-process weights
    w0, _ = load_tensors(tmp_path / "weights0.safetensors")
    w1, _ = load_tensors(tmp_path / "weights1.safetensors")
    for k, v in ref_model.state_dict().items():
        assert torch.equal(w0[k], w1[k]), k
        assert torch.allclose(w0[k], v, atol=1e-4), k
    # a NaN on one rank stopped both ranks with a TrainingError at the same step
    for rank in (0, 1):
        msg = (tmp_path / f"nan{rank}.txt").read_text()
        assert "non-finite" in msg and "optimizer step 3" in msg
    # only rank 0 wrote checkpoints (one run_dir, one checkpoint pair)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint-e0003.safetensors", "checkpoint.json"]
