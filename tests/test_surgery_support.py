"""Models the surgery tests define themselves, and small helpers (no tests in this file).

MLP, a plain CNN (conv → linear through Flatten), a residual net with projection shortcuts, a
DenseNet-like concat block and depthwise-separable convs — the coupling cases surgery must handle.
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 5))


class PlainCNN(nn.Sequential):
    def __init__(self):
        super().__init__(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(12, 6, 3, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(6 * 4 * 4, 10),
        )


class ResBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x)), projection when the shape changes."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + self.shortcut(x))


class ResNetTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = ResBlock(8, 8)
        self.layer2 = ResBlock(8, 16, stride=2)
        self.layer3 = ResBlock(16, 16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class DenseBlock(nn.Module):
    """Two DenseNet layers: each appends its features to the running concat."""

    def __init__(self, cin, growth):
        super().__init__()
        self.l1 = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, growth, 3, padding=1))
        self.l2 = nn.Sequential(nn.BatchNorm2d(cin + growth), nn.ReLU(), nn.Conv2d(cin + growth, growth, 3, padding=1))

    def forward(self, x):
        x = torch.cat([x, self.l1(x)], dim=1)
        return torch.cat([x, self.l2(x)], dim=1)


class DenseNetTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = DenseBlock(8, 6)
        self.trans = nn.Sequential(nn.BatchNorm2d(20), nn.ReLU(), nn.Conv2d(20, 12, 1), nn.AvgPool2d(2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10))

    def forward(self, x):
        return self.head(self.trans(self.block(self.stem(x))))


class DepthwiseSeparable(nn.Sequential):
    def __init__(self):
        super().__init__(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
            nn.Conv2d(24, 24, 3, stride=2, padding=1, groups=24, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
            nn.Conv2d(24, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
        )


TEST_MODELS = {
    "mlp": (MLP, (20,)),
    "cnn": (PlainCNN, (3, 8, 8)),
    "resnet": (ResNetTiny, (3, 16, 16)),
    "densenet": (DenseNetTiny, (3, 16, 16)),
    "dwsep": (DepthwiseSeparable, (3, 16, 16)),
}


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine params, so BN folding and removal are really tested."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(n, generator=gen) * 0.5 + 1)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.2)
    return model


def make(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A test model (eval mode, random BN stats) and a 'real-looking' example batch."""
    cls, shape = TEST_MODELS[name]
    torch.manual_seed(seed)
    model = randomize_bn(cls(), seed).eval()
    x = real_looking(shape, batch=6, seed=seed)
    return model, x


def real_looking(shape, batch: int = 6, seed: int = 0) -> torch.Tensor:
    """Normalised synthetic images (netrazor.data.make_synthetic) or smooth vectors for an MLP."""
    if len(shape) == 3:
        from netrazor.data import make_synthetic

        bundle = make_synthetic(n_train=4, n_val=batch, n_test=2, num_classes=3, shape=tuple(shape), seed=seed)
        return bundle.normalize(bundle.val.images[:batch])
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(3, *shape, generator=gen)
    return base[torch.arange(batch) % 3] + 0.1 * torch.randn(batch, *shape, generator=gen)


def zero_consumer_inputs(model: nn.Module, plan: dict[str, list[int]]) -> nn.Module:
    """Test-side reference: hook ``module name -> input channels`` to read zeros (removal semantics)."""
    import copy

    ref = copy.deepcopy(model)
    for name, idxs in plan.items():
        module = ref.get_submodule(name)
        dim = -1 if isinstance(module, nn.Linear) else 1
        index = torch.tensor(sorted(idxs), dtype=torch.long)

        def hook(mod, args, index=index, dim=dim):
            return (args[0].index_fill(dim, index, 0.0),)

        module.register_forward_pre_hook(hook)
    return ref


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
