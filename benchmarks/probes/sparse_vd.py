"""Probe (not product code): does per-weight variational sparsification (Sparse VD, Molchanov,
Ashukha & Vetrov 2017) give LeNet-300-100 on shifted MNIST a lower error per non-zero than the
iterative magnitude pruning of our Deep-Compression baseline? Written from the paper's equations.

Session 12 (issue 10). Not a benchmark: no record, nothing in RESULTS.md; docs/compare.md quotes it.
It trains the task's dense model (20 epochs, shifted digits), then Sparse VD from it for EPOCHS epochs
(Adam 1e-3, KL weight KL_SCALE / N), drops weights with log alpha > 3, and saves the plain masked net;
it also writes OUT_DIR/quantise-pack.yaml, the shift recipe's quantise (10 QAT epochs) and pack stages:

    OMP_NUM_THREADS=1 python benchmarks/probes/sparse_vd.py 0 1 40 /tmp/probe/k1
    netrazor compress /tmp/probe/k1/quantise-pack.yaml --run-dir /tmp/probe/run-k1
"""
import dataclasses
import json
import sys

import torch
import torch.nn.functional as F
from torch import nn

from netrazor.data import load_data
from netrazor.measure import evaluate
from netrazor.models import build_model
from netrazor.surgery import save_model
from netrazor.train import Trainer, default_config

seed, kl_scale, epochs, out = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(seed)
data = load_data("mnist")  # the recipes split val with data seed 0
base = dataclasses.replace(default_config("lenet300", "mnist"), augment="shift", seed=seed)
dense = build_model("lenet300")
Trainer(dense, data, base).fit()
print("dense", evaluate(dense, data.val, data.mean, data.std)["error"], evaluate(dense, data.test, data.mean, data.std)["error"])

THRESH = 3.0  # log alpha above which a weight is dropped (the paper's rule)


class VDLinear(nn.Module):
    def __init__(self, lin: nn.Linear):
        super().__init__()
        self.theta = nn.Parameter(lin.weight.detach().clone())
        self.bias = nn.Parameter(lin.bias.detach().clone())
        self.log_sigma2 = nn.Parameter(torch.full_like(self.theta, -10.0))

    def log_alpha(self):
        return torch.clamp(self.log_sigma2 - torch.log(self.theta ** 2 + 1e-8), -10, 10)

    def forward(self, x):
        if self.training:  # local reparameterisation: sample the pre-activations
            mu = F.linear(x, self.theta, self.bias)
            var = F.linear(x * x, torch.exp(self.log_sigma2))
            return mu + torch.sqrt(var + 1e-8) * torch.randn_like(mu)
        return F.linear(x, self.theta * (self.log_alpha() < THRESH), self.bias)

    def kl(self):
        k1, k2, k3 = 0.63576, 1.87320, 1.48695
        la = self.log_alpha()
        return -(k1 * torch.sigmoid(k2 + k3 * la) - 0.5 * F.softplus(-la) - k1).sum()


model = build_model("lenet300")
model.load_state_dict(dense.state_dict())
for name in ("fc1", "fc2", "fc3"):
    setattr(model, name, VDLinear(getattr(model, name)))
n_train = len(data.train)


def loss_fn(m, x, y):
    logits = m(x)
    kl = sum(mod.kl() for mod in m.modules() if isinstance(mod, VDLinear))
    return F.cross_entropy(logits, y) + kl_scale * kl / n_train, logits


cfg = dataclasses.replace(base, epochs=epochs, optimizer="adam", lr=1e-3, weight_decay=0.0, nesterov=False)
Trainer(model, data, cfg, loss_fn=loss_fn).fit()
model.eval()
plain = build_model("lenet300")
sd = dense.state_dict()
nz = 0
with torch.no_grad():
    for name in ("fc1", "fc2", "fc3"):
        vd = getattr(model, name)
        w = vd.theta * (vd.log_alpha() < THRESH)
        sd[f"{name}.weight"] = w
        sd[f"{name}.bias"] = vd.bias
        nz += int((w != 0).sum())
        print(name, "density", float((w != 0).float().mean()))
plain.load_state_dict(sd)
res = {"seed": seed, "kl_scale": kl_scale, "epochs": epochs, "nonzero": nz,
       "val_error": evaluate(plain, data.val, data.mean, data.std)["error"],
       "test_error": evaluate(plain, data.test, data.mean, data.std)["error"]}
print(json.dumps(res))
save_model(plain, f"{out}/model")
json.dump(res, open(f"{out}/probe.json", "w"))
open(f"{out}/quantise-pack.yaml", "w").write(f"""name: probe-sparse-vd
description: the Sparse VD probe's net, quantised and packed like the mnist-lenet300-shift recipe
data: {{name: mnist}}
model: {{name: lenet300, checkpoint: {out}/model}}
seed: {seed}
train: {{augment: shift}}
stages:
  - quantise: {{tolerance: 0.001, qat_epochs: 10}}
  - pack: {{}}
""")
