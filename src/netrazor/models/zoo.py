"""The zoo registry: names -> builders, and the JSON spec that rebuilds a model (architecture as data).

Every built model carries ``model.netrazor_spec = {"name": ..., "kwargs": {...}}`` holding *all*
resolved arguments (defaults filled in, tuples as lists), so ``model_from_spec(json.loads(...))``
rebuilds the same architecture. Weights travel separately (safetensors, ``netrazor.surgery.save_model``).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from netrazor.errors import ModelError
from netrazor.models import lenet, mobilenetv2, resnet, vgg
from netrazor.models._common import as_size, positive_float, positive_int

SPEC_ATTR = "netrazor_spec"


@dataclass(frozen=True)
class ZooEntry:
    builder: Callable[..., nn.Module]
    in_channels: int  # default when the caller passes None
    input_size: tuple[int, int]
    summary: str

    def options(self) -> dict[str, Any]:
        """Family-specific keyword options and their defaults (beyond the common five)."""
        common = {"num_classes", "in_channels", "input_size", "width_mult", "depth_mult"}
        params = inspect.signature(self.builder).parameters
        return {k: p.default for k, p in params.items() if k not in common}


_MNIST = (1, (28, 28))
_CIFAR = (3, (32, 32))

ZOO: dict[str, ZooEntry] = {
    "lenet300": ZooEntry(lenet.build_lenet300, *_MNIST, "LeNet-300-100 (fully connected)"),
    "lenet5": ZooEntry(lenet.build_lenet5, *_MNIST, "LeNet-5-Caffe 20-50-500-10"),
    "resnet20": ZooEntry(resnet.cifar_resnet_builder(3), *_CIFAR, "ResNet-20 (CIFAR, He et al. 2016)"),
    "resnet32": ZooEntry(resnet.cifar_resnet_builder(5), *_CIFAR, "ResNet-32 (CIFAR, He et al. 2016)"),
    "resnet56": ZooEntry(resnet.cifar_resnet_builder(9), *_CIFAR, "ResNet-56 (CIFAR, He et al. 2016)"),
    "resnet18": ZooEntry(resnet.build_resnet18, *_CIFAR, "ResNet-18, CIFAR stem"),
    "vgg11": ZooEntry(vgg.vgg_builder("vgg11"), *_CIFAR, "VGG-11 with BN (CIFAR)"),
    "vgg16": ZooEntry(vgg.vgg_builder("vgg16"), *_CIFAR, "VGG-16 with BN (CIFAR)"),
    "mobilenetv2": ZooEntry(mobilenetv2.build_mobilenetv2, *_CIFAR, "MobileNetV2 (CIFAR strides)"),
}


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return sorted(ZOO)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def build_model(
    name: str,
    *,
    num_classes: int = 10,
    in_channels: int | None = None,
    input_size: int | tuple[int, int] | None = None,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    **kw: Any,
) -> nn.Module:
    """Build zoo model ``name``; unknown names or arguments raise :class:`ModelError`.

    ``in_channels`` / ``input_size`` default to the family's home data (1x28x28 for LeNets,
    3x32x32 otherwise). ``width_mult`` scales channels / hidden units; ``depth_mult`` scales
    blocks per stage (ResNets, MobileNetV2) or convs per stage (VGG) and is a no-op for LeNets.
    Family options (``kw``): resnets ``shortcut="projection"|"pad"``, ``blocks=[...]``,
    ``widths=[...]`` (explicit per-stage lists, used as given); vgg ``classifier="linear"|"mlp"``.
    """
    key = str(name).lower()
    if key not in ZOO:
        raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}.")
    entry = ZOO[key]
    options = entry.options()
    unknown = sorted(set(kw) - set(options))
    if unknown:
        allowed = ", ".join(sorted(options)) or "none"
        raise ModelError(f"{key} does not take {', '.join(unknown)}; its extra options are: {allowed}.")
    kwargs: dict[str, Any] = {
        "num_classes": positive_int("num_classes", num_classes),
        "in_channels": positive_int("in_channels", entry.in_channels if in_channels is None else in_channels),
        "input_size": list(as_size(entry.input_size if input_size is None else input_size)),
        "width_mult": positive_float("width_mult", width_mult),
        "depth_mult": positive_float("depth_mult", depth_mult),
    }
    kwargs.update({k: _jsonable(kw.get(k, default)) for k, default in options.items()})
    build_args = dict(kwargs, input_size=tuple(kwargs["input_size"]))
    try:
        model = entry.builder(**build_args)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot build {key} with {kwargs}: {exc}; check the model options.") from exc
    setattr(model, SPEC_ATTR, {"name": key, "kwargs": kwargs})
    return model


def model_spec(model: nn.Module) -> dict:
    """A copy of the JSON spec of a zoo model; ``ModelError`` for models the zoo did not build."""
    spec = getattr(model, SPEC_ATTR, None)
    if not isinstance(spec, dict):
        raise ModelError(
            f"{type(model).__name__} has no netrazor_spec (it was not built by netrazor.models.build_model); "
            "build it with build_model, or save altered architectures with netrazor.surgery.save_model."
        )
    return copy.deepcopy(spec)


def model_from_spec(spec: dict) -> nn.Module:
    """Rebuild a zoo model (fresh weights) from :func:`model_spec` output, e.g. read from JSON."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(
        spec.get("kwargs", {}), dict
    ):
        raise ModelError(f"a model spec is {{'name': str, 'kwargs': dict}}, got {spec!r}; use model_spec(model).")
    return build_model(spec["name"], **spec.get("kwargs", {}))
