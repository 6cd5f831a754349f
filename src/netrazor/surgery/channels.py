"""Physical removal of channels / units and everything coupled to them.

The coupling (next layer's inputs, BN, residual partners, concat slices, depthwise groups)
comes from Torch-Pruning's ``DependencyGraph`` (Fang et al., "DepGraph", CVPR 2023); we do not
write a second one. This module wraps it behind two functions:

- :func:`prunable_groups` lists the coupled channel sets of a model;
- :func:`remove_channels` removes given channels (on a deep copy, or in place with
  ``inplace=True``), proves the result equal to the original with those channels zeroed at their
  consumers, and returns the smaller model (optionally with the kept indices of every cut
  parameter, for carrying optimizer state over).

Indices always refer to the ORIGINAL model. Requests for modules in the same coupled group
(e.g. two convolutions added in a residual) are merged (union) in the group's root index space.
Groups whose channels reach the model's output directly (the classifier's units) are never
offered: removing them would change the output shape.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

import torch
from torch import nn

from netrazor.errors import SurgeryError
from netrazor.surgery.equivalence import as_batches, check_equivalence

log = logging.getLogger(__name__)

ROOT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
MASKABLE_CONSUMERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

# {parameter name: [(dim, kept indices of the ORIGINAL parameter), ...]}: the cuts, in the form
# Trainer.rebuild_optimizer(index_maps=...) takes to slice momentum / Adam moments.
IndexMaps = dict[str, list[tuple[int, torch.Tensor]]]


@dataclass
class Group:
    """One set of coupled channels: removing channel ``i`` of ``root`` removes it everywhere here.

    ``producers``: modules whose outputs lose channels; ``consumers``: modules whose inputs lose
    channels (with their own index lists in ``consumer_idxs``, parallel to the root's channels —
    a Linear after Flatten maps one root channel to many input units).
    """

    root: str
    size: int
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    consumer_idxs: dict[str, list[list[int]]] = field(default_factory=dict)

    def __repr__(self) -> str:  # short, for logs
        return f"Group(root={self.root!r}, size={self.size}, producers={self.producers}, consumers={self.consumers})"


def _first_input(example_input):
    return as_batches(example_input)[0]


def build_graph(model: nn.Module, example_input):
    """Trace ``model`` once with Torch-Pruning (needs autograd, so it enables grad)."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, _first_input(example_input), verbose=False)
    except Exception as exc:  # TP raises many types on models it cannot trace
        raise SurgeryError(
            f"could not trace the model's channel dependencies with Torch-Pruning ({exc}); "
            "pass an example input of the right shape, or remove unsupported ops."
        ) from exc
    finally:
        model.train(was_training)


def _describe(dg, tp_group, names: dict) -> Group | None:
    """Turn a Torch-Pruning group into our :class:`Group`, or None if it reaches the output."""
    from torch_pruning import ops

    root_dep = tp_group[0].dep
    root_mod = root_dep.target.module
    # Widths may differ inside a group only through concat/split (with their index mapping).
    remaps = any(isinstance(item.dep.target.module, (ops._ConcatOp, ops._SplitOp)) for item in tp_group)
    producers: list[str] = []
    consumers: list[str] = []
    consumer_idxs: dict[str, list[list[int]]] = {}
    for item in tp_group:
        dep = item.dep
        module = dep.target.module
        is_out = dg.is_out_channel_pruning_fn(dep.handler)
        if is_out and not dep.target.outputs:
            return None  # this channel set is (part of) the model output
        if not isinstance(module, nn.Module) or module not in names:
            continue  # elementwise / reshape / concat placeholders of the tracer
        name = names[module]
        if is_out and not remaps and dg.get_out_channels(module) not in (None, dg.get_out_channels(root_mod)):
            # The coupling crosses an op the tracer does not model (e.g. a zero-padding shortcut
            # that adds channels): removing would be wrong, so the group is not offered.
            log.debug("group %s skipped: %s has a different width", names[root_mod], name)
            return None
        if is_out:
            if name not in producers:
                producers.append(name)
        else:
            consumers.append(name)
            per_root: dict[int, list[int]] = {}
            for idx, root_idx in zip(item.idxs, item.root_idxs):
                per_root.setdefault(int(root_idx), []).append(int(idx))
            size = dg.get_out_channels(root_mod)
            consumer_idxs[name] = [per_root.get(r, []) for r in range(size)]
    return Group(root=names[root_mod], size=int(dg.get_out_channels(root_mod)), producers=producers,
                 consumers=consumers, consumer_idxs=consumer_idxs)


def _all_groups(model: nn.Module, dg) -> list[Group]:
    names = {m: n for n, m in model.named_modules()}
    groups = []
    for tp_group in dg.get_all_groups(root_module_types=ROOT_TYPES):
        g = _describe(dg, tp_group, names)
        if g is not None:
            groups.append(g)
    return groups


def prunable_groups(model: nn.Module, example_input) -> list[Group]:
    """The coupled channel sets of ``model`` that can be removed (output units excluded).

    ``example_input``: one batch (or a list of batches; the first is traced) of the right shape.
    """
    return _all_groups(model, build_graph(model, example_input))


def _group_of(model: nn.Module, groups: list[Group], name: str) -> Group:
    for g in groups:
        if name in g.producers:
            return g
    try:
        module = model.get_submodule(name)
    except AttributeError:
        module = None
    if isinstance(module, ROOT_TYPES):
        raise SurgeryError(
            f"{name!r} produces the model's output (or is not reached by the example input): its units "
            "cannot be removed without changing the output; list candidates with prunable_groups()."
        )
    for g in groups:
        if name in g.consumers:
            raise SurgeryError(
                f"{name!r} only receives channels of group {g.root!r}; name a layer whose OUTPUT "
                f"channels you want removed (e.g. {g.root!r})."
            )
    raise SurgeryError(
        f"{name!r} has no removable output channels (unknown module or not a conv/linear); "
        "list candidates with prunable_groups(model, example_input)."
    )


def _root_indices(model: nn.Module, dg, group: Group, name: str, idxs: Sequence[int]) -> set[int]:
    """Map channel indices of producer ``name`` to the group's root indices."""
    module = model.get_submodule(name)
    size = dg.get_out_channels(module)
    bad = [i for i in idxs if not 0 <= int(i) < size]
    if bad:
        raise SurgeryError(f"channel indices {bad[:5]} out of range for {name!r} ({size} channels); use 0..{size - 1}.")
    if name == group.root:
        return {int(i) for i in idxs}
    root_mod = model.get_submodule(group.root)
    pruner = dg.get_pruner_of_module(root_mod)
    tp_group = dg.get_pruning_group(root_mod, pruner.prune_out_channels, list(range(group.size)))
    for item in tp_group:
        if item.dep.target.module is module and dg.is_out_channel_pruning_fn(item.dep.handler):
            lookup = {int(i): int(r) for i, r in zip(item.idxs, item.root_idxs)}
            return {lookup[int(i)] for i in idxs}
    raise SurgeryError(f"could not map channels of {name!r} to its group root {group.root!r}; report this model.")


class _ZeroInputChannels:
    """Forward pre-hook zeroing given input channels: the reference a removal must reproduce."""

    def __init__(self, idxs: list[int], dim: int):
        self.idxs = torch.tensor(sorted(set(idxs)), dtype=torch.long)
        self.dim = dim

    def __call__(self, module, args):
        x = args[0].clone()
        x.index_fill_(self.dim, self.idxs, 0.0)
        return (x,) + tuple(args[1:])


def _masked_reference(model: nn.Module, plan: list[tuple[Group, set[int]]]) -> nn.Module | None:
    """A copy of the original whose consumers see zeros at the removed channels (None if unmaskable)."""
    ref = copy.deepcopy(model)
    for group, roots in plan:
        for name in group.consumers:
            module = ref.get_submodule(name)
            if not isinstance(module, MASKABLE_CONSUMERS):
                return None
            idxs = [i for r in roots for i in group.consumer_idxs[name][r]]
            dim = -1 if isinstance(module, nn.Linear) else 1
            module.register_forward_pre_hook(_ZeroInputChannels(idxs, dim))
    return ref


class _Snapshot:
    """Every module's parameters, buffers and plain attributes (out_channels, num_features …), so an
    in-place removal that fails can put the model back exactly. Torch-Pruning and the tagging below
    re-assign tensors and attributes, they never write into the old ones, so shallow copies suffice."""

    def __init__(self, model: nn.Module):
        self.items = [(m, dict(m._parameters), dict(m._buffers),
                       {k: v for k, v in vars(m).items() if not k.startswith("_")}) for m in model.modules()]

    def restore(self) -> None:
        for module, params, buffers, attrs in self.items:
            module._parameters.clear()
            module._parameters.update(params)
            module._buffers.clear()
            module._buffers.update(buffers)
            vars(module).update(attrs)


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, attr = name.rpartition(".")
    return (model.get_submodule(module_name) if module_name else model), attr


def _kept_per_dim(tag: torch.Tensor, shape: torch.Size) -> list[tuple[int, torch.Tensor]]:
    """Decode which entries of a parameter of ``shape`` survived, from its pruned flat-index tag.

    Returns ``[(dim, kept indices)]`` for the dims that changed; raises ``SurgeryError`` when the
    survivors are not a per-dimension selection (then no index map could describe the cut).
    """
    flat = tag.to(torch.int64)
    strides, step = [], 1
    for size in reversed(shape):  # row-major strides of the original
        strides.insert(0, step)
        step *= size
    cuts = []
    for dim, (size, stride) in enumerate(zip(shape, strides)):
        coord = (flat // stride) % size
        kept = coord.movedim(dim, 0).reshape(flat.shape[dim], -1)[:, 0] if flat.numel() else coord.new_zeros(0)
        if kept.numel() != size or not torch.equal(kept, torch.arange(size)):
            cuts.append((dim, kept.clone()))
    expected = torch.arange(step).reshape(shape)
    for dim, kept in cuts:
        expected = expected.index_select(dim, kept)
    if not torch.equal(expected, flat):
        raise SurgeryError("Torch-Pruning cut a parameter in a way that is not a selection along its dimensions; "
                           "remove_channels cannot describe it — leave that group out.")
    return cuts


def _prune_plan(work: nn.Module, dg, plan: list[tuple[Group, set[int]]], skip: set) -> IndexMaps:
    """Prune ``plan`` on ``work`` and return the index maps of every parameter that was cut.

    How the cuts are known exactly: before pruning, every parameter is swapped for a float64 tag
    holding its flat indices (0, 1, 2, …); Torch-Pruning index-selects the tags like any weight, so
    the surviving values name the surviving entries. The real parameters are then sliced with those
    indices (keeping dtype, requires_grad and any grad) and the uncut ones are put back as the SAME
    Parameter objects, so an optimizer's state for them stays attached. ``skip``: parameters the
    dependency graph holds by identity (ids of unwrapped nn.Parameters); they are pruned as they are.
    """
    originals = {n: p for n, p in work.named_parameters() if id(p) not in skip}
    for name, param in originals.items():
        module, attr = _owner(work, name)
        module._parameters[attr] = nn.Parameter(
            torch.arange(param.numel(), dtype=torch.float64, device=param.device).reshape(param.shape),
            requires_grad=False)
    for group, roots in plan:
        root_mod = work.get_submodule(group.root)
        pruner = dg.get_pruner_of_module(root_mod)
        tp_group = dg.get_pruning_group(root_mod, pruner.prune_out_channels, sorted(roots))
        try:
            tp_group.prune()
        except Exception as exc:  # Torch-Pruning raises plain errors on layers it cannot cut
            raise SurgeryError(f"Torch-Pruning could not remove channels of group {group.root!r} ({exc}); "
                               "the model is left unchanged — leave that group out.") from exc
        log.debug("removed %d channels of group %s", len(roots), group.root)
    maps: IndexMaps = {}
    for name, original in originals.items():
        module, attr = _owner(work, name)
        tag = module._parameters[attr].detach()
        if tag.shape == original.shape:
            module._parameters[attr] = original
            continue
        cuts = _kept_per_dim(tag.cpu(), original.shape)
        data, grad = original.detach(), original.grad
        for dim, kept in cuts:
            data = data.index_select(dim, kept.to(data.device))
            grad = grad.index_select(dim, kept.to(grad.device)) if grad is not None else None
        new = nn.Parameter(data.clone(), requires_grad=original.requires_grad)
        new.grad = grad
        module._parameters[attr] = new
        maps[name] = cuts
    return maps


RemoveResult = Union[nn.Module, tuple[nn.Module, IndexMaps]]


def remove_channels(
    model: nn.Module,
    channels: Mapping[str, Sequence[int]],
    example_input,
    *,
    check: bool = True,
    rtol: float = 1e-5,
    inplace: bool = False,
    return_index_maps: bool = False,
) -> RemoveResult:
    """Physically remove output channels/units and everything coupled to them.

    ``channels`` maps a module name (a Conv/Linear, see :func:`prunable_groups`) to the indices
    of its output channels to remove, in the original model's numbering.

    ``inplace=False`` (default) works on a deep copy: the given model is never modified; the
    smaller copy is returned. ``inplace=True`` shrinks ``model`` itself and returns it: every
    module object stays (hooks and references to modules keep working) and every parameter that was
    not cut stays the same ``nn.Parameter`` object; cut parameters are new objects (same dtype,
    ``requires_grad`` and sliced ``.grad``), so an optimizer must be rebuilt — e.g. a Trainer's
    ``rebuild_optimizer(index_maps=...)`` with the maps below. If anything fails (Torch-Pruning,
    the model no longer runs, the equivalence check) the model is restored exactly and
    ``SurgeryError`` is raised, in both modes.

    ``return_index_maps=True`` returns ``(model, index_maps)`` with ``index_maps = {parameter
    name: [(dim, kept indices of the original parameter), ...]}`` for every parameter that was cut
    (buffers such as BN running statistics are cut too, but are not listed).

    With ``check`` the result is compared with the original whose consumers see zeros at the
    removed channels (exactly what removal means); a mismatch above ``rtol`` raises
    :class:`SurgeryError`. Groups with consumers we cannot mask (not Conv/Linear) are removed
    without that check (logged).
    """
    was_training = model.training
    work = model if inplace else copy.deepcopy(model)
    maps: IndexMaps = {}
    if not channels:
        return (work, maps) if return_index_maps else work
    dg = build_graph(work, example_input)
    groups = _all_groups(work, dg)
    merged: dict[str, tuple[Group, set[int]]] = {}
    for name, idxs in channels.items():
        group = _group_of(work, groups, name)
        roots = _root_indices(work, dg, group, name, list(idxs))
        if group.root in merged:
            merged[group.root][1].update(roots)
        else:
            merged[group.root] = (group, roots)
    for group, roots in merged.values():
        if len(roots) >= group.size:
            raise SurgeryError(
                f"removing all {group.size} channels of group {group.root!r} would disconnect the model; "
                "keep at least one channel (or remove the whole layer another way)."
            )
    plan = [(g, r) for g, r in merged.values() if r]
    reference = _masked_reference(model, plan) if check else None  # taken before anything changes
    snapshot = _Snapshot(work) if inplace else None
    try:
        maps = _prune_plan(work, dg, plan, skip={id(p) for p in getattr(dg, "_param_to_name", {})})
        try:
            with torch.no_grad():
                work.eval()(_first_input(example_input))
        except Exception as exc:
            raise SurgeryError(f"the model no longer runs after removing channels ({exc}); the coupling of "
                               "some op is not understood — the original model is left unchanged.") from exc
        finally:
            work.train(was_training)
        if check:
            if reference is None:
                log.warning("remove_channels: a group has consumers that cannot be masked; equivalence not checked.")
            else:
                check_equivalence(reference, work, example_input, rtol=rtol, what="remove_channels")
    except BaseException:
        if snapshot is not None:
            snapshot.restore()
        raise
    return (work, maps) if return_index_maps else work
