"""Swap a named submodule (typically a rectifier for ``nn.Identity``) and find constant units."""

from __future__ import annotations

import copy

from torch import nn

from netrazor.errors import SurgeryError


def replace_activation(model: nn.Module, module_name: str, new: nn.Module | None = None) -> nn.Module:
    """Replace submodule ``module_name`` by ``new`` (default ``nn.Identity()``), in place.

    This changes the function on purpose (linearising a rectifier, as NEPENTHE/EASIER do), so no
    equivalence check; :func:`netrazor.surgery.fold_linear_sections` then folds what became linear.
    Only module activations can be replaced: an ``F.relu`` call in ``forward`` has no name.
    Returns ``model`` for chaining.
    """
    new = nn.Identity() if new is None else new
    try:
        model.get_submodule(module_name)
    except AttributeError as exc:
        names = [n for n, m in model.named_modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.GELU))]
        raise SurgeryError(
            f"no submodule {module_name!r} in the model; activation modules are: {names[:20]}"
        ) from exc
    if module_name == "":
        raise SurgeryError("module_name is empty; name a submodule (e.g. 'layer1.0.relu').")
    model.set_submodule(module_name, new)
    return model


def activation_names(model: nn.Module, types=(nn.ReLU, nn.ReLU6)) -> list[str]:
    """Names of the rectifier modules of ``model`` (candidates for :func:`replace_activation`)."""
    return [n for n, m in model.named_modules() if isinstance(m, types)]


def copy_with_identity(model: nn.Module, names: list[str]) -> nn.Module:
    """A deep copy of ``model`` with the named activations replaced by ``nn.Identity``."""
    out = copy.deepcopy(model)
    for n in names:
        replace_activation(out, n)
    return out
