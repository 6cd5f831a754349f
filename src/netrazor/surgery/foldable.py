"""Which rectifiers, once made linear, let surgery remove a layer — and how.

Linearising a rectifier only saves a layer when a weighted layer feeds it and another reads it
with nothing non-linear in between: ReLU → max-pool → conv, for instance, saves the ReLU op and
nothing else (max-pool is not linear). Depth methods use this to spend their accuracy budget on
rectifiers whose removal pays (``netrazor.methods.entropy_depth``, knob ``order``).

``foldable_rectifiers(model, x) -> {name: "exact" | "approximate"}``:
- ``exact``: :func:`fold_linear_sections` will fold the two layers into one, e.g. conv → Linear
  on a 1×1 map, conv → unpadded conv, any conv on a 1×1 map (centre tap), Linear → Linear;
- ``approximate``: the layers are two zero-padded convs on maps larger than 1×1 — only
  :func:`netrazor.surgery.approximate.fold_pair_approximately` can merge them (with fine-tuning).
Rectifiers missing from the dict gain no fold (pool or add in between, model input, output).
"""

from __future__ import annotations

import copy

from torch import fx, nn

from netrazor.surgery.equivalence import as_batches

_THROUGH = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity, nn.Dropout)
_WEIGHTED = (nn.Conv2d, nn.Linear)


def _shape(node: fx.Node):
    meta = node.meta.get("tensor_meta")
    return tuple(getattr(meta, "shape", ())) or None


def _is_flatten(node: fx.Node, mods) -> bool:
    if node.op == "call_module":
        return isinstance(mods[node.target], nn.Flatten)
    return (node.op == "call_function" and getattr(node.target, "__name__", "") == "flatten") or (
        node.op == "call_method" and node.target == "flatten")


def _noop_pool(node: fx.Node, mods) -> bool:
    if node.op != "call_module" or not isinstance(mods[node.target], (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return False
    return _shape(node) is not None and _shape(node) == _shape(node.args[0])


def foldable_rectifiers(model: nn.Module, example_input, names: list[str] | None = None) -> dict[str, str]:
    """See the module docstring. ``names``: the rectifier modules to judge (default: every
    ReLU/ReLU6/LeakyReLU/PReLU/GELU module)."""
    from torch.fx.passes.shape_prop import ShapeProp

    from netrazor.surgery.folding import trace

    gm = trace(copy.deepcopy(model).eval())
    ShapeProp(gm).propagate(as_batches(example_input)[0][:1])
    mods = dict(gm.named_modules())
    if names is None:
        kinds = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.GELU)
        names = [n for n, m in mods.items() if isinstance(m, kinds)]
    wanted = set(names)
    out: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target not in wanted:
            continue
        # backwards: BN / identities up to the weighted layer that feeds the rectifier
        prev = node.args[0] if node.args else None
        while isinstance(prev, fx.Node) and prev.op == "call_module" and isinstance(mods[prev.target], _THROUGH) \
                and len(prev.users) == 1:
            prev = prev.args[0]
        if not (isinstance(prev, fx.Node) and prev.op == "call_module" and isinstance(mods[prev.target], _WEIGHTED)
                and len(prev.users) == 1):
            continue
        # forwards: through linear, weight-free ops to the weighted layer that reads it
        cur, flattened = node, False
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            if nxt.op == "call_module" and isinstance(mods[nxt.target], _THROUGH) or _noop_pool(nxt, mods):
                cur = nxt
            elif _is_flatten(nxt, mods):
                cur, flattened = nxt, True
            else:
                break
        nxt = next(iter(cur.users)) if len(cur.users) == 1 else None
        if nxt is None or nxt.op != "call_module" or not isinstance(mods[nxt.target], _WEIGHTED):
            continue
        a, b = mods[prev.target], mods[nxt.target]
        a_map = _shape(prev)
        one_pixel = a_map is not None and len(a_map) == 4 and tuple(a_map[2:]) == (1, 1)
        if isinstance(b, nn.Linear):
            if isinstance(a, nn.Linear) or one_pixel:
                out[node.target] = "exact"
        elif not flattened and isinstance(a, nn.Conv2d):
            pad = b.padding if isinstance(b.padding, tuple) else (b.padding, b.padding)
            out[node.target] = "exact" if one_pixel or tuple(pad) == (0, 0) else "approximate"
    return out
