"""Fold linear sections exactly: BN into conv/linear, linear∘linear, conv∘conv, residual adds.

Works on the ``torch.fx`` graph of the model, so any fx-traceable ``nn.Module`` (Sequentials,
residual blocks written with ``+``, concat blocks …) is handled, not only the zoo. The result is a
``torch.fx.GraphModule`` whose submodules keep their original names where they survive.

Rules, applied until none fires (each one exact in eval mode, see :mod:`compose`):
- ``nn.Identity`` nodes (e.g. a rectifier replaced by :func:`replace_activation`) and
  ``nn.Dropout`` (identity in eval mode) are dropped;
- BatchNorm after a Conv2d / Linear is folded into it; BatchNorm before a Linear or an unpadded
  conv too (before a zero-padded conv it is refused: its shift would reach the padding);
- Linear → Linear becomes one Linear (declined if the middle is a bottleneck that would add params);
- Conv2d → Conv2d becomes one conv with the enlarged kernel kA + (kB-1)·sA when the second conv
  has no padding (otherwise refused: see :mod:`compose`); when the kernel grows, both forms are
  timed on CPU at batch 1 and 64 and the faster is kept (``time_kernels``), and the report says which;
- ``conv(x) + x`` and ``conv(x) + proj(x)`` (a residual whose branch became one conv, and its
  identity or projection shortcut) become one conv (delta kernel / shortcut taps added).
- a conv before a floor-mode pool that never reads its last rows/columns (2×2 pool on 7×7) pads
  asymmetrically (``F.pad``) and skips them (``trim_borders``; timed, kept only when faster);
- shape-aware (the example input fixes the feature-map sizes): a zero-padded k×k conv on a 1×1
  map becomes a 1×1 conv (only its centre tap ever reads data); an adaptive pool whose output size
  equals its input size is dropped; a 1×1 conv on a 1×1 map followed by flatten and a Linear
  becomes one Linear. So the stages of a VGG that run at 1×1 (28×28 inputs reach 1×1 after four
  pools) fold exactly into the classifier once their rectifiers are linear.

Limits: only plain ``nn.Conv2d`` (zero padding, dilation 1) and ``nn.Linear``, BN with running
stats (eval semantics); modules called more than once are left alone; ops between two layers
other than Identity (pooling, flatten, concat, activations) stop a section. Models fx cannot
trace (data-dependent control flow) raise :class:`SurgeryError`. Requires models in eval mode
semantics: the folded model computes what the original computes in ``eval()``.
"""

from __future__ import annotations

import copy
import logging
import operator
from collections import Counter

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from netrazor.errors import SurgeryError
from netrazor.surgery import compose
from netrazor.surgery.compose import NotExact
from netrazor.surgery.equivalence import as_batches, check_equivalence
from netrazor.surgery.tracing import symbolic_trace
from netrazor.surgery.timing import compare_forms

log = logging.getLogger(__name__)

_ADD = {operator.add, operator.iadd, torch.add}
_WEIGHTED = (nn.Conv2d, nn.Linear)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
# ops that compute each output position from the same input position only (a border crop passes them)
_PER_POSITION = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Identity, nn.Dropout)


def trace(model: nn.Module) -> fx.GraphModule:
    try:
        return symbolic_trace(model)
    except Exception as exc:  # fx raises TraceError and others
        raise SurgeryError(
            f"torch.fx cannot trace this model ({type(exc).__name__}: {exc}); folding needs a "
            "traceable forward (no data-dependent if/for) — fold the traceable submodules instead."
        ) from exc


def count_layers(model: nn.Module) -> dict:
    """Weighted layers, BatchNorms and rectifiers of a model (for reports)."""
    mods = list(model.modules())
    return {
        "weighted": sum(isinstance(m, _WEIGHTED) for m in mods),
        "batchnorm": sum(isinstance(m, _BN) for m in mods),
        "rectifiers": sum(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in mods),
    }


def _chain_macs(a, b, new, a_out, b_out) -> tuple[int, int] | None:
    """MACs per example of A then B, and of the composed conv (None without shape information)."""
    if a_out is None or b_out is None or len(a_out) != 3 or len(b_out) != 3:
        return None
    hw_a, hw_b = a_out[1] * a_out[2], b_out[1] * b_out[2]
    return a.weight.numel() * hw_a + b.weight.numel() * hw_b, new.weight.numel() * hw_b


class _Folder:
    def __init__(self, gm: fx.GraphModule, time_kernels: bool, repeats: int, trim: bool = False, example=None):
        self.gm = gm
        self.trim = trim
        self.example = example
        self.time_kernels = time_kernels
        self.repeats = repeats
        self.folds: list[dict] = []
        self.refused: list[dict] = []
        self.declined: set = set()
        self.uses = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")

    # -- helpers ---------------------------------------------------------------------------
    def module(self, node, types=None):
        if not isinstance(node, fx.Node) or node.op != "call_module":
            return None
        m = self.gm.get_submodule(node.target)
        if types is not None and not isinstance(m, types):
            return None
        return m

    def private(self, node) -> bool:
        """The node's module is called once and its output has exactly one user."""
        return self.uses[node.target] == 1 and len(node.users) == 1

    def set_module(self, node, new: nn.Module) -> None:
        self.gm.set_submodule(node.target, new)

    def refuse(self, key, kind: str, at: list[str], reason: str) -> None:
        self.declined.add(key)
        self.refused.append({"kind": kind, "at": at, "reason": reason})

    @staticmethod
    def in_shape(node):
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        return tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else None

    # -- rules -----------------------------------------------------------------------------
    def drop_identity(self, node) -> bool:
        # Dropout is the identity in eval mode, the only mode a folded model is defined for.
        if self.module(node, (nn.Identity, nn.Dropout)) is None:
            return False
        node.replace_all_uses_with(node.args[0])
        self.gm.graph.erase_node(node)
        return True

    def fold_bn(self, node) -> bool:
        bn = self.module(node, _BN)
        if bn is None:
            return False
        prev = node.args[0]
        layer = self.module(prev, _WEIGHTED)
        if layer is None or not self.private(prev) or ("bn", node.target) in self.declined:
            return False
        try:
            new = compose.fold_bn(layer, bn)
        except NotExact as exc:
            self.refuse(("bn", node.target), "bn", [prev.target, node.target], str(exc))
            return False
        self.set_module(prev, new)
        node.replace_all_uses_with(prev)
        self.gm.graph.erase_node(node)
        self.folds.append({"kind": "bn", "into": prev.target, "from": [prev.target, node.target]})
        return True

    def fold_bn_forward(self, node) -> bool:
        """BN → Linear, or BN → unpadded conv (pre-activation layouts once the ReLU is gone)."""
        layer = self.module(node, _WEIGHTED)
        prev = node.args[0] if node.args else None
        bn = self.module(prev, _BN)
        if layer is None or bn is None or not self.private(prev) or self.uses[node.target] != 1:
            return False
        key = ("bn-forward", prev.target)
        if key in self.declined:
            return False
        try:
            new = compose.fold_bn_forward(bn, layer)
        except NotExact as exc:
            self.refuse(key, "bn", [prev.target, node.target], str(exc))
            return False
        self.set_module(node, new)
        node.args = (prev.args[0],) + tuple(node.args[1:])
        self.gm.graph.erase_node(prev)
        self.folds.append({"kind": "bn", "into": node.target, "from": [prev.target, node.target]})
        return True

    def fold_chain(self, node) -> bool:
        b = self.module(node, _WEIGHTED)
        prev = node.args[0] if node.args else None
        a = self.module(prev, _WEIGHTED)
        # a Linear subclass (the gated first layer) may be the first of a linear pair; compose refuses the rest
        same_kind = type(a) is type(b) or isinstance(a, nn.Linear) and isinstance(b, nn.Linear)
        if b is None or a is None or not same_kind or not self.private(prev):
            return False
        if self.uses[node.target] != 1:
            return False
        key = ("chain", prev.target, node.target)
        if key in self.declined:
            return False
        at = [prev.target, node.target]
        try:
            new = compose.compose_linear(a, b) if isinstance(a, nn.Linear) else compose.compose_conv(a, b)
        except NotExact as exc:
            self.refuse(key, "conv" if isinstance(a, nn.Conv2d) else "linear", at, str(exc))
            return False
        record = {"kind": "linear" if isinstance(a, nn.Linear) else "conv", "into": node.target, "from": at}
        n_before = a.weight.numel() + b.weight.numel()
        if isinstance(a, nn.Linear):
            if new.weight.numel() > n_before:
                self.refuse(key, "linear", at, "declined: the composed linear would have more parameters")
                return False
        else:
            record["kernel"] = list(new.kernel_size)
            enlarged = max(new.kernel_size) > max(max(a.kernel_size), max(b.kernel_size))
            shape = self.in_shape(prev.args[0])
            macs = _chain_macs(a, b, new, self.in_shape(prev), self.in_shape(node))
            if macs is not None:
                record["macs_unfolded"], record["macs_folded"] = macs
            more_macs = macs is None or macs[1] > macs[0]
            # Time when the kernel grows (the rule) or when folding adds MACs (e.g. a
            # depthwise conv composed with a pointwise one becomes a dense conv).
            if (enlarged or more_macs) and self.time_kernels and shape is not None:
                timing = compare_forms(nn.Sequential(a, b), new, shape, repeats=self.repeats)
                record["timing"] = timing
                record["kept"] = timing["keep"]
            else:
                record["kept"] = "unfolded" if more_macs else "folded"
            if record["kept"] == "unfolded":
                self.declined.add(key)
                self.folds.append(record)
                return False
        self.set_module(node, new)
        node.args = (prev.args[0],) + tuple(node.args[1:])
        self.gm.graph.erase_node(prev)
        self.folds.append(record)
        return True

    def fold_add(self, node) -> bool:
        if node.op != "call_function" or node.target not in _ADD or node.kwargs or len(node.args) != 2:
            return False
        p, q = node.args
        if not (isinstance(p, fx.Node) and isinstance(q, fx.Node)):
            return False
        key = ("add", node.name)
        if key in self.declined:
            return False
        for branch, other in ((p, q), (q, p)):
            c = self.module(branch, nn.Conv2d)
            if c is None or not self.private(branch):
                continue
            x = branch.args[0]
            if other is x:
                kind, at = "identity", [branch.target]
                try:
                    new = compose.merge_identity(c)
                except NotExact as exc:
                    self.refuse(key, kind, at, str(exc))
                    return False
                drop = None
            else:
                d = self.module(other, nn.Conv2d)
                if d is None or not self.private(other) or other.args[0] is not x:
                    continue
                kind, at = "projection", [branch.target, other.target]
                try:
                    new = compose.merge_parallel(c, d)
                except NotExact as exc:
                    self.refuse(key, kind, at, str(exc))
                    return False
                drop = other
            self.set_module(branch, new)
            node.replace_all_uses_with(branch)
            self.gm.graph.erase_node(node)
            if drop is not None:
                self.gm.graph.erase_node(drop)
            self.folds.append({"kind": kind, "into": branch.target, "from": at})
            return True
        return False

    # -- shape-aware rules (exact because of the feature-map size the example input gives) ---
    def centre_tap(self, node) -> bool:
        """A zero-padded k×k conv on a 1×1 map is a 1×1 conv: only the centre tap reads data."""
        c = self.module(node, nn.Conv2d)
        if c is None or self.uses[node.target] != 1 or tuple(c.kernel_size) == (1, 1):
            return False
        s_in, s_out = self.in_shape(node.args[0]), self.in_shape(node)
        if s_in is None or s_out is None or tuple(s_in[1:]) != (1, 1) or tuple(s_out[1:]) != (1, 1):
            return False
        try:
            new = compose.centre_tap(c)
        except NotExact:
            return False
        self.set_module(node, new)
        self.folds.append({"kind": "centre-tap", "into": node.target, "from": [node.target],
                           "kernel": list(c.kernel_size), "spatial": [1, 1]})
        return True

    def drop_noop_pool(self, node) -> bool:
        """An adaptive pool whose output size equals its input size is the identity (one pixel per bin)."""
        if self.module(node, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) is None:
            return False
        s_in, s_out = self.in_shape(node.args[0]), self.in_shape(node)
        if s_in is None or s_out is None or tuple(s_in) != tuple(s_out):
            return False
        node.replace_all_uses_with(node.args[0])
        self.gm.graph.erase_node(node)
        self.folds.append({"kind": "noop-pool", "into": None, "from": [node.target]})
        return True

    def _flatten_source(self, node):
        """``x`` when ``node`` is flatten(x) from dim 1 to the end, else None."""
        if not isinstance(node, fx.Node) or not node.args:
            return None
        if node.op == "call_module":
            m = self.gm.get_submodule(node.target)
            if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1 and self.uses[node.target] == 1:
                return node.args[0]
            return None
        if node.op == "call_function" and node.target is torch.flatten or node.op == "call_method" and node.target == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return node.args[0] if start == 1 and end == -1 else None
        return None

    def fold_conv_flatten_linear(self, node) -> bool:
        """conv on a 1×1 map (1×1 kernel, no padding) → flatten → Linear is one Linear on the flattened input."""
        lin = self.module(node, nn.Linear)
        if lin is None or self.uses[node.target] != 1 or not node.args:
            return False
        flat = node.args[0]
        src = self._flatten_source(flat)
        conv = self.module(src, nn.Conv2d)
        if conv is None or not self.private(src) or len(flat.users) != 1:
            return False
        s_in, s_out = self.in_shape(src.args[0]), self.in_shape(src)
        if s_in is None or s_out is None or tuple(s_in[1:]) != (1, 1) or tuple(s_out[1:]) != (1, 1):
            return False
        key = ("conv-linear", src.target, node.target)
        if key in self.declined:
            return False
        try:
            new = compose.compose_linear(compose.pointwise_as_linear(conv), lin)
        except NotExact as exc:
            self.refuse(key, "linear", [src.target, node.target], str(exc))
            return False
        if new.weight.numel() > conv.weight.numel() + lin.weight.numel():
            self.refuse(key, "linear", [src.target, node.target], "declined: the composed linear would have more parameters")
            return False
        self.set_module(node, new)
        flat.args = (src.args[0],) + tuple(flat.args[1:])
        self.gm.graph.erase_node(src)
        self.folds.append({"kind": "conv-linear", "into": node.target, "from": [src.target, node.target]})
        return True

    def trim_unread_border(self, node) -> bool:
        """A conv whose last rows/columns a floor-mode pool never reads computes them for nothing.

        Max-pool 2×2 on a 7×7 map reads rows 0–5 only (3×3 on 3×3: rows 0–1). The conv feeding it
        (through per-position ops: BN, rectifiers, identities) then pads asymmetrically instead:
        ``F.pad`` (p left/top, p − r right/bottom) and the conv without padding gives exactly the
        rows the pool reads. One more op, fewer MACs: timed like enlarged kernels.
        """
        pool = self.module(node, (nn.MaxPool2d, nn.AvgPool2d))
        if pool is None or getattr(pool, "ceil_mode", False) or compose._pair(pool.padding) != (0, 0):
            return False
        if isinstance(pool, nn.MaxPool2d) and compose._pair(pool.dilation) != (1, 1):
            return False
        k = compose._pair(pool.kernel_size)
        st = compose._pair(pool.stride if pool.stride is not None else pool.kernel_size)
        s_in, s_out = self.in_shape(node.args[0]), self.in_shape(node)
        if s_in is None or s_out is None or len(s_in) != 3:
            return False
        r = tuple(s_in[1 + d] - ((s_out[1 + d] - 1) * st[d] + k[d]) for d in (0, 1))
        if max(r) <= 0:
            return False
        cur, chain = node.args[0], []
        while isinstance(cur, fx.Node) and cur.op == "call_module" and self.uses[cur.target] == 1 and len(cur.users) == 1 \
                and isinstance(self.gm.get_submodule(cur.target), _PER_POSITION):
            chain.append(self.gm.get_submodule(cur.target))
            cur = cur.args[0]
        conv = self.module(cur, nn.Conv2d)
        if conv is None or not self.private(cur) or ("trim", cur.target) in self.declined:
            return False
        p = compose._pair(conv.padding)
        if isinstance(conv.padding, str) or compose._pair(conv.stride) != (1, 1) or compose._pair(conv.dilation) != (1, 1) \
                or conv.padding_mode != "zeros" or any(p[d] < max(r[d], 0) for d in (0, 1)):
            return False
        r = (max(r[0], 0), max(r[1], 0))
        pads = (p[1], p[1] - r[1], p[0], p[0] - r[0])  # F.pad order: left, right, top, bottom
        new = copy.deepcopy(conv)
        new.padding = (0, 0)
        record = {"kind": "trim", "into": cur.target, "from": [cur.target, node.target], "rows_cols_dropped": list(r)}
        shape = self.in_shape(cur.args[0])
        if self.time_kernels and shape is not None:
            timing = compare_forms(nn.Sequential(conv, *chain, pool), nn.Sequential(nn.ZeroPad2d(pads), new, *chain, pool),
                                   shape, repeats=self.repeats)
            record["timing"], record["kept"] = timing, timing["keep"]
        else:
            record["kept"] = "folded"
        self.declined.add(("trim", cur.target))
        self.folds.append(record)
        if record["kept"] == "unfolded":
            return False
        with self.gm.graph.inserting_before(cur):
            pad = self.gm.graph.call_function(F.pad, (cur.args[0], pads))
        cur.args = (pad,) + tuple(cur.args[1:])
        self.set_module(cur, new)
        self.gm.recompile()
        if self.example is not None:  # the maps between the conv and the pool shrank: refresh shapes
            ShapeProp(self.gm).propagate(self.example)
        return True

    def run(self) -> None:
        rules = (self.drop_identity, self.fold_bn, self.fold_bn_forward, self.centre_tap, self.drop_noop_pool,
                 self.fold_chain, self.fold_conv_flatten_linear, self.fold_add)
        if self.trim:
            rules = rules + (self.trim_unread_border,)
        changed = True
        while changed:
            changed = False
            for node in list(self.gm.graph.nodes):
                if any(rule(node) for rule in rules):
                    changed = True
                    break


def fold_linear_sections(
    model: nn.Module,
    example_input,
    *,
    rtol: float = 1e-5,
    time_kernels: bool = True,
    timing_repeats: int = 15,
    strict: bool = False,
    trim_borders: bool = True,
) -> tuple[nn.Module, dict]:
    """Fold every linear section of ``model`` into fewer ops, exactly; returns ``(model, report)``.

    The given model is not modified; on success a new ``torch.fx.GraphModule`` is returned
    (or the given model itself when nothing could be folded). Linearise rectifiers first with
    :func:`replace_activation`. ``report``: ``folds`` (kind, into, from, kernel, timing, kept),
    ``refused`` (kind, at, reason), ``layers_before`` / ``layers_after`` and ``max_rel_error``.

    Knobs: ``time_kernels`` — time enlarged-kernel folds against the two-conv form and keep the
    faster (else keep the fold when it has fewer MACs); ``strict`` — raise SurgeryError when any
    section that could be folded is refused (inexact padding, shared module …) instead of keeping
    it unfolded; ``rtol`` of the final equivalence check (on ``example_input`` and random inputs);
    ``trim_borders`` — let a conv skip the rows/columns a following floor-mode pool never reads
    (asymmetric ``F.pad`` + unpadded conv; timed like enlarged kernels).
    """
    batches = as_batches(example_input)
    gm = trace(copy.deepcopy(model).eval())
    try:
        ShapeProp(gm).propagate(batches[0][:1])
    except Exception as exc:
        raise SurgeryError(f"could not run the traced model on the example input ({exc}); check its shape.") from exc
    folder = _Folder(gm, time_kernels, timing_repeats, trim=trim_borders, example=batches[0][:1])
    folder.run()
    real_refusals = [r for r in folder.refused if not r["reason"].startswith("declined")]
    if strict and real_refusals:
        raise SurgeryError(
            f"{len(real_refusals)} linear section(s) cannot be folded exactly, first: "
            f"{real_refusals[0]['at']}: {real_refusals[0]['reason']}; use strict=False to keep them unfolded."
        )
    report = {"folds": folder.folds, "refused": folder.refused, "layers_before": count_layers(model)}
    applied = [f for f in folder.folds if f.get("kept", "folded") == "folded"]
    if not applied:
        report.update(layers_after=report["layers_before"], max_rel_error=0.0)
        return model, report
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    gm.train(model.training)
    report["max_rel_error"] = check_equivalence(model, gm, batches, rtol=rtol, what="fold_linear_sections")
    report["layers_after"] = count_layers(gm)
    log.info("fold_linear_sections: %d folds, %d refused", len(applied), len(folder.refused))
    return gm, report
