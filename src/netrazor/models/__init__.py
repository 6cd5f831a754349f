"""Reference model zoo: LeNet-300-100, LeNet-5-Caffe, CIFAR ResNet-20/32/56, ResNet-18,
VGG-11/16 (BN), MobileNetV2 — with width/depth multipliers, any input channels and class count,
and a JSON spec that rebuilds each model (see docs/models.md for the layout conventions).

Saving and loading (zoo models and altered ones alike) is ``netrazor.surgery.save_model`` /
``load_model``: one format, safetensors + JSON, which also reads the retired plain zoo files.
"""

from netrazor.models.zoo import build_model, list_models, model_from_spec, model_spec

__all__ = ["build_model", "list_models", "model_spec", "model_from_spec"]

_MOVED = {"save_model": "netrazor.surgery.save_model", "load_model": "netrazor.surgery.load_model"}


def __getattr__(name: str):
    # The zoo's own saver/loader were merged into surgery's (one format); say where they went.
    if name in _MOVED:
        raise AttributeError(f"netrazor.models.{name} was merged into {_MOVED[name]} (one format for zoo and "
                             f"altered models); import it from netrazor.surgery.")
    raise AttributeError(f"module 'netrazor.models' has no attribute {name!r}")
