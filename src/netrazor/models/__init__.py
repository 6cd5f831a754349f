"""Reference model zoo: LeNet-300-100, LeNet-5-Caffe, CIFAR ResNet-20/32/56, ResNet-18,
VGG-11/16 (BN), MobileNetV2 — with width/depth multipliers, any input channels and class count,
and a JSON spec that rebuilds each model (see docs/models.md for the layout conventions).
"""

from netrazor.models.io import load_model, save_model
from netrazor.models.zoo import build_model, list_models, model_from_spec, model_spec

__all__ = ["build_model", "list_models", "model_spec", "model_from_spec", "save_model", "load_model"]
