"""Delta evaluation of candidate zero-sets: compute only what a candidate changes.

A candidate for layer ``l`` (a Linear or a groups=1 Conv2d) differs from the committed student
only in the weights it zeroes, and the layer is linear in its weight, so

    out_c = layer(x; W with Z_c zeroed) = base_out - layer_nobias(x; W restricted to Z_c)

(bias unchanged). ``DeltaFitness`` therefore

1. runs the traced student once and records the layer's input and output, the values the rest of
   the network reads from upstream (skip paths), and — see 4 — the next linear layer's input/output;
2. computes the *delta* of every candidate on the output units/channels it touches. Every
   candidate of a DE step is a subset of the same pool of positions, so the delta is linear in the
   candidate's membership vector: grouping the pool by output row ``o`` (m = most pool slots in one
   row), ``delta[o, c] = A[c, o, :m] @ G[o, :m, :]`` with ``G`` = weight value × the matching input
   feature (the layer input's im2col column for a conv). One ``bmm`` over rows scores a whole chunk
   of candidates with ``m/fan_in`` of the dense work (LeNet-5 fc1: 162 of 800 columns);
3. runs the rest of the network on ``base_out - delta`` for a chunk of candidates at once
   (``torch.func.vmap`` over the fx graph after the layer; the upstream part is never re-run);
4. channel-sparse propagation [REC]: when the layer is followed only by channel-wise ops (ReLU-like
   activations, max/avg pooling, eval-mode dropout, identity) and then another linear layer ``n``,
   a candidate touching channels ``T`` changes ``n``'s input on ``T`` only, so
   ``n_out_c = base_n_out + n_nobias(chain(out_c[:, T]) - chain(base_out)[:, T]; W_n[:, T])``:
   the activations/pooling and ``n`` run on ``|T|`` channels instead of all (LeNet-5 conv1: a
   candidate touches ~14 of 20 channels, and pool1 + conv2 are most of the forward). Used when the
   candidates of a call touch on average at most ``sparse_threshold`` of the layer's channels;
4b. shared channel subsets [REC] (``dedup_channels``): ``n`` is linear in its input channels, so
   ``n_out_c = base_n_out + sum_{t in T_c} n_nobias(d_t(S_ct); W_n[:, t])`` where ``S_ct`` is the set
   candidate c zeroes in channel t and ``d_t`` the chain's change on channel t. Candidates of one
   step are subsets of one small pool, so many of them zero the *same* subset of a channel (LeNet-5
   conv1: ~4 pool slots per channel, at most 2^4 subsets, 128 candidates): each distinct
   (channel, subset) is propagated through the chain and ``n`` once, as a one-input-channel conv,
   and added to every candidate that carries it. Used when the distinct pairs are at most
   ``dedup_ratio`` of the (candidate, touched channel) pairs, else the per-candidate form above;
5. ``fast_pool`` [REC]: MaxPool2d modules with kernel == stride, no padding/dilation/ceil mode, on
   the evaluated part are replaced by the max of their k² strided slices — the same values
   (max is exact), and on our CPU 7–13× faster than ``max_pool2d`` for LeNet-5's pool1. It is a
   kernel choice, not a change of the function; ``measure_throughput`` reports the ratio with and
   without it so the two sources of speed stay separate.

Examples are processed in chunks (``example_chunk``, sized from ``GATHER_ELEMENTS``) so the gathered
``G`` stays bounded; logits of all chunks are concatenated before the divergence is taken, so any
divergence callable sees the whole batch. Chunking over examples assumes the evaluated part treats
examples independently (true of eval-mode networks; the student is evaluated in eval mode).

Anything else — untraceable models, a layer called twice, grouped/padded-mode convs, Conv1d/3d,
Linear on >2-D inputs — falls back to ``fitness.VectorisedFitness`` (``self.fallback`` says why).
Same candidates, same fitness values up to float rounding (tested against ``LoopedFitness``).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.func import vmap

from netrazor.methods.evolution.divergence import Divergence
from netrazor.methods.evolution.suffix import _downstream
from netrazor.surgery.tracing import symbolic_trace

log = logging.getLogger(__name__)

GATHER_ELEMENTS = 16_000_000  # ~64 MB of float32 for the gathered G of one example chunk
SHARED_ELEMENTS = 4_000_000   # ~16 MB: shares and next-layer outputs of one example chunk (4b; 4 M measured
#                               fastest of 1, 2, 4, 16 M on LeNet-5 conv1: the chunk stays in cache)
CHUNK_ELEMENTS = 8_000_000    # ~32 MB: the layer's output for one chunk of candidates x examples
CACHE_ELEMENTS = 96_000_000   # ~384 MB: G of a whole pool kept across a step's calls (else per call)

# Ops that act on each channel separately and have no per-channel parameters, so they can run on
# any subset of channels (Dropout only in eval mode, where it is the identity).
_CHANNELWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                        nn.Hardtanh, nn.Hardswish, nn.MaxPool2d, nn.AvgPool2d, nn.Identity, nn.Dropout)
_CHANNELWISE_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, torch.sigmoid,
                          torch.tanh, F.hardtanh, F.hardswish, F.max_pool2d, F.avg_pool2d, torch.sigmoid}


class SliceMaxPool2d(nn.Module):
    """Exact ``MaxPool2d(k)`` (stride k, no padding/dilation, floor mode) as elementwise maxima of
    strided slices, first along the width then along the height (2(k-1) ``maximum`` calls). Same
    values; far faster than ``max_pool2d`` on our CPU. Pools the last two dims of any layout."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.k
        h, w = x.shape[-2] // k * k, x.shape[-1] // k * k
        cols = x[..., :h, 0:w:k]
        for j in range(1, k):
            cols = torch.maximum(cols, x[..., :h, j:w:k])
        out = cols[..., 0:h:k, :]
        for i in range(1, k):
            out = torch.maximum(out, cols[..., i:h:k, :])
        return out


def _is_relu(gm: fx.GraphModule, n: fx.Node) -> bool:
    if n.op == "call_module":
        return isinstance(gm.get_submodule(n.target), nn.ReLU)
    return n.op == "call_function" and n.target in (F.relu, torch.relu) and len(n.args) == 1


def _pool_before_relu(gm: fx.GraphModule) -> None:
    """relu -> SliceMaxPool2d becomes SliceMaxPool2d -> relu: exact (max commutes with the
    monotone relu, NaN included) and the relu runs on k² times fewer elements."""
    for n in list(gm.graph.nodes):
        if n.op != "call_module" or not isinstance(gm.get_submodule(n.target), SliceMaxPool2d):
            continue
        a = n.args[0]
        if not isinstance(a, fx.Node) or not _is_relu(gm, a) or len(a.users) != 1:
            continue
        x = a.args[0]
        n.replace_all_uses_with(a)
        n.args = (x,)
        a.args = (n,)
        n.append(a)  # a now runs after the pool
    gm.graph.lint()
    gm.recompile()


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _fast_pool_for(m: nn.Module) -> nn.Module | None:
    if not isinstance(m, nn.MaxPool2d) or m.return_indices or m.ceil_mode:
        return None
    k, s = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size)
    if k[0] != k[1] or k != s or _pair(m.padding) != (0, 0) or _pair(m.dilation) != (1, 1):
        return None
    return SliceMaxPool2d(int(k[0]))


def _supported_linear(m: nn.Module) -> str | None:
    """None if ``m``'s output is linear in its weight in the way the gather needs; else why not."""
    if isinstance(m, nn.Linear):
        # the gather reads the features the weight multiplies: the module's input, or for a subclass
        # that transforms it first (the gated first layer selects input features) its ``linear_input``
        if type(m).forward is nn.Linear.forward or callable(getattr(m, "linear_input", None)):
            return None
        return f"{type(m).__name__} has its own forward and no linear_input"
    if isinstance(m, nn.Conv2d):
        if m.groups != 1:
            return "grouped conv"
        if m.padding_mode != "zeros" or isinstance(m.padding, str) and m.padding != "valid":
            return f"conv padding {m.padding!r}/{m.padding_mode}"
        return None
    return f"{type(m).__name__} is not Linear/Conv2d"


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, wanted: set[fx.Node]) -> None:
        super().__init__(gm)
        self.wanted, self.values = wanted, {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n in self.wanted:
            self.values[n] = out
        return out


def _graph_after(gm: fx.GraphModule, anchor: fx.Node, fast_pool: bool) -> tuple[fx.GraphModule, list[fx.Node]]:
    """GraphModule of the nodes downstream of ``anchor`` (excluded), called as ``rest(anchor_value,
    *frontier_values)``; ``frontier`` are the upstream nodes those downstream nodes read."""
    down = _downstream(anchor)
    output = next(n for n in gm.graph.nodes if n.op == "output")
    frontier: list[fx.Node] = []
    for n in gm.graph.nodes:
        if n in down and n is not anchor:  # the output node included: it may return upstream values too
            for a in n.all_input_nodes:
                if a not in down and a not in frontier:
                    frontier.append(a)
    graph = fx.Graph()
    env = {anchor: graph.placeholder("anchor")}
    for i, a in enumerate(frontier):
        env[a] = graph.placeholder(f"frontier_{i}")
    for n in gm.graph.nodes:
        if n in down and n is not anchor and n is not output:
            env[n] = graph.node_copy(n, lambda a: env[a])
    graph.output(fx.map_arg(output.args[0], lambda a: env[a]))
    rest = fx.GraphModule(gm, graph)
    if fast_pool:
        for i, n in enumerate(rest.graph.nodes):
            if n.op == "call_module":
                fast = _fast_pool_for(rest.get_submodule(n.target))
                if fast is not None:
                    name = f"_slice_max_pool_{i}"
                    rest.add_submodule(name, fast)
                    n.target = name
        _pool_before_relu(rest)
    return rest, frontier


def _chain_after(gm: fx.GraphModule, layer_node: fx.Node, fast_pool: bool):
    """``(callables, next_node)`` when the layer is followed by channel-wise ops only and then a
    Linear/Conv2d, each node feeding only the next; ``None`` otherwise."""
    ops, node = [], layer_node
    while len(node.users) == 1:
        user = next(iter(node.users))
        if user.op == "call_module":
            m = gm.get_submodule(user.target)
            if _supported_linear(m) is None and user.args == (node,) and not user.kwargs:
                return [op for op, _ in ops], user
            if not isinstance(m, _CHANNELWISE_MODULES) or user.args[:1] != (node,) or len(user.all_input_nodes) != 1:
                return None
            if isinstance(m, nn.Dropout) and m.training:
                return None
            fast = fast_pool and _fast_pool_for(m)
            if fast and ops and ops[-1][1]:  # relu then pool: pool first (see _pool_before_relu)
                ops.insert(len(ops) - 1, (fast, False))
            else:
                ops.append((fast or m, isinstance(m, nn.ReLU)))
        elif user.op == "call_function" and user.target in _CHANNELWISE_FUNCTIONS:
            if user.args[:1] != (node,) or len(user.all_input_nodes) != 1:
                return None
            args, kwargs, fn = user.args[1:], dict(user.kwargs), user.target
            ops.append((lambda t, fn=fn, args=args, kwargs=kwargs: fn(t, *args, **kwargs), _is_relu(gm, user)))
        else:
            return None
        node = user
    return None


class DeltaFitness:
    """Fitness of P candidates for one layer from their weight deltas (see the module docstring).

    Knobs: ``chunk_size`` (candidates per batched call; None = sized from ``CHUNK_ELEMENTS``),
    ``example_chunk`` (examples per gather; None = sized from ``GATHER_ELEMENTS``), ``fast_pool``,
    ``sparse_channels`` and ``sparse_threshold`` (mean fraction of the layer's channels a call's
    candidates may touch for the channel-sparse path), ``row_buckets`` (output rows are padded to
    the largest pool count within their bucket of similar counts), ``dedup_channels`` and
    ``dedup_ratio`` (shared channel subsets, see 4b: used when distinct (channel, subset) pairs are
    at most this fraction of the (candidate, touched channel) pairs), ``pool`` (flat indices every
    candidate of this evaluator's life is drawn from — a DE step's pool: its layout and gathered
    ``G`` are then built once and reused by every call, within ``CACHE_ELEMENTS``)."""

    def __init__(self, model: nn.Module, layer_name: str, x: torch.Tensor, teacher_logits: torch.Tensor,
                 divergence: Divergence, chunk_size: int | None = None, example_chunk: int | None = None,
                 fast_pool: bool = True, sparse_channels: bool = True, sparse_threshold: float = 0.75,
                 row_buckets: int = 4, pool: torch.Tensor | None = None, dedup_channels: bool = True,
                 dedup_ratio: float = 0.4) -> None:
        self.teacher_logits, self.divergence, self.row_buckets = teacher_logits, divergence, max(1, row_buckets)
        self.dedup_channels, self.dedup_ratio = dedup_channels, dedup_ratio
        self.pool_mask, self._pool_layout, self._g_cache = None, None, {}
        self.chunk_size, self.sparse_threshold = chunk_size, sparse_threshold
        self.fallback: str | None = None
        self.path_used: str | None = None  # "dense", "channel-sparse" or "channel-shared": the last call's path
        self._vectorised = None
        layer = model.get_submodule(layer_name)
        why = _supported_linear(layer)
        gm = None
        if why is None:
            try:
                gm = symbolic_trace(model)
            except Exception as exc:  # fx raises many types for untraceable code
                why = f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__})"
        if gm is not None:
            calls = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == layer_name]
            if len(calls) != 1:
                why = f"{layer_name} is called {len(calls)} times in the graph"
        if why is None:
            why = self._build(gm, calls[0], layer, x, example_chunk, fast_pool, sparse_channels, pool)
        if why is not None:
            from netrazor.methods.evolution.fitness import VectorisedFitness

            self.fallback = why
            log.info("delta evaluation unavailable for %s (%s); using the vmap evaluator", layer_name, why)
            self._vectorised = VectorisedFitness(model, layer_name, x, teacher_logits, divergence, chunk_size)

    # ------------------------------------------------------------------ set-up
    @torch.no_grad()
    def _build(self, gm, layer_node, layer, x, example_chunk, fast_pool, sparse_channels, pool) -> str | None:
        self.layer, self.weight = layer, layer.weight.detach()
        if pool is not None:
            self.pool_mask = torch.zeros(self.weight.numel(), dtype=torch.bool, device=self.weight.device)
            self.pool_mask[pool.to(self.weight.device)] = True
        self.out_channels = self.weight.shape[0]
        self.fan_in = self.weight[0].numel()
        chain = _chain_after(gm, layer_node, fast_pool) if sparse_channels else None
        anchor = chain[1] if chain else layer_node
        rest, frontier = _graph_after(gm, anchor, fast_pool)
        in_node = layer_node.args[0]
        wanted = {in_node, layer_node, *frontier}
        if chain:
            next_in = chain[1].args[0]
            wanted |= {next_in, chain[1]}
        rec = _Recorder(gm, wanted)
        rec.run(x)
        v = rec.values
        self.layer_in, self.base_out = v[in_node], v[layer_node]
        if callable(getattr(layer, "linear_input", None)):
            self.layer_in = layer.linear_input(self.layer_in)
        if isinstance(layer, nn.Linear) and self.layer_in.dim() != 2:
            return "Linear on a >2-D input"
        self.batch = x.shape[0]
        self.frontier = [v[a] for a in frontier]
        self.rest = rest
        self.chain_ops = self.next_layer = None
        if chain:
            ops, next_node = chain
            next_layer = gm.get_submodule(next_node.target)
            base_next_in = v[next_in]
            ok = base_next_in.dim() == self.base_out.dim() and base_next_in.shape[1] == self.out_channels and (
                isinstance(next_layer, nn.Conv2d) and base_next_in.dim() == 4
                or isinstance(next_layer, nn.Linear) and base_next_in.dim() == 2)
            if ok:
                self.chain_ops, self.next_layer = ops, next_layer
                self.base_next_in, self.base_next_out = base_next_in, v[chain[1]]
                # channel-major copies: the sparse path gathers whole channels (contiguous blocks)
                self.base_out_cm = self.base_out.transpose(0, 1).contiguous()
                self.base_next_in_cm = base_next_in.transpose(0, 1).contiguous()
                self._build_shared(next_layer)
            else:  # the channel-sparse shortcut does not apply: evaluate after the layer itself
                self.rest, frontier = _graph_after(gm, layer_node, fast_pool)
                rec = _Recorder(gm, set(frontier))
                rec.run(x)
                self.frontier = [rec.values[a] for a in frontier]
        tensors = [self.layer_in, self.base_out, *self.frontier]
        if not all(isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[0] == self.batch for t in tensors):
            example_chunk = self.batch  # some value is not per-example: never split the batch
        self.per_example_out = self.base_out[0].numel()
        self.spatial = self.base_out.shape[2:]
        self.L = int(math.prod(self.spatial)) if self.spatial else 1
        self.example_chunk = example_chunk
        # [fan_in, B, L]: the layer's input features (im2col for a conv), feature-major so that the
        # gather of a pool's columns is one contiguous index_select per example chunk
        self.columns_t = self._columns(self.layer_in).permute(1, 0, 2).contiguous()
        self._rest_batched = vmap(lambda a, *f: self.rest(a, *f), in_dims=(0,) + (None,) * len(self.frontier))
        return None

    def _build_shared(self, next_layer: nn.Module) -> None:
        """Caches of the shared-subset path (4b): the next layer's base output channels-last and
        its weight per input channel as ``[C, taps, out]``; off for dilated next convs."""
        w = next_layer.weight.detach()
        if isinstance(next_layer, nn.Conv2d):
            if _pair(next_layer.dilation) != (1, 1):
                self.dedup_channels = False
                return
            padding = (0, 0) if next_layer.padding == "valid" else _pair(next_layer.padding)
            self._next_geometry = (padding, _pair(next_layer.kernel_size), _pair(next_layer.stride))
            self._base_next_cl = self.base_next_out.permute(0, 2, 3, 1).contiguous()
        else:
            self._base_next_cl = self.base_next_out
        self._w_next_cl = w.reshape(w.shape[0], w.shape[1], -1).permute(1, 2, 0).contiguous()

    def _columns(self, inp: torch.Tensor) -> torch.Tensor:
        """``[b, fan_in, L]``: the layer's input features per output position (im2col for a conv)."""
        if isinstance(self.layer, nn.Linear):
            return inp.unsqueeze(-1)
        m = self.layer
        padding = (0, 0) if m.padding == "valid" else m.padding
        return F.unfold(inp, m.kernel_size, dilation=m.dilation, padding=padding, stride=m.stride)

    def _nobias(self, layer: nn.Module, inp: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, nn.Linear):
            return F.linear(inp, weight)
        padding = (0, 0) if layer.padding == "valid" else layer.padding
        return F.conv2d(inp, weight, None, layer.stride, padding, layer.dilation)

    # ------------------------------------------------------------------ evaluation
    def _layout(self, pos: torch.Tensor) -> list[dict]:
        """Group positions ``pos`` (sorted flat indices) by output row, rows of similar counts in
        one bucket (padding every row to the global maximum wasted ~1/3 of the bmm on LeNet-5's
        conv2). Each bucket: rows, m, the padded ``[R, m]`` position table, its validity mask and
        the input column of every slot."""
        dev = self.weight.device
        rows, counts = torch.unique_consecutive(pos // self.fan_in, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        order = torch.argsort(counts, descending=True, stable=True)
        layout = []
        for part in torch.tensor_split(order, min(self.row_buckets, rows.numel())):
            if part.numel() == 0:
                continue
            part = torch.sort(part).values
            cnt, st = counts[part], starts[part]
            m = int(cnt.max())
            slot = torch.arange(m, device=dev)
            # table[r, j]: the j-th position of row r (padding repeats a real one, masked by valid)
            table = pos[st[:, None] + torch.minimum(slot[None, :], cnt[:, None] - 1)]
            layout.append({"rows": rows[part], "m": m, "table": table, "valid": slot[None, :] < cnt[:, None],
                           "cols": (table % self.fan_in).flatten()})
        return layout

    def _weighted(self, layout: list[dict], zero_sets: torch.Tensor) -> list[torch.Tensor]:
        """Per bucket ``[R, n, m]``: A[c, r, j] (candidate c zeroes slot j of row r) times the weight
        there — the weight rides on the membership: delta[r, c] = (A[c, r] * w[table[r]]) @ G[r]."""
        n, w = zero_sets.shape[0], self.weight.reshape(-1)
        out = []
        for bk in layout:
            r, m = bk["table"].shape
            member = zero_sets[:, bk["table"].flatten()].view(n, r, m) & bk["valid"]
            out.append((member.to(w.dtype) * w[bk["table"]]).transpose(0, 1).contiguous())
        return out

    @torch.no_grad()
    def __call__(self, zero_sets: torch.Tensor) -> torch.Tensor:
        if self._vectorised is not None:
            return self._vectorised(zero_sets)
        zero_sets = zero_sets.to(self.weight.device).contiguous()
        n = zero_sets.shape[0]
        # union of all candidates' positions, sorted (uint8 amax: bool any() is ~13x slower here)
        pos = torch.nonzero(zero_sets.view(torch.uint8).amax(0)).flatten()
        if pos.numel() == 0:  # nobody zeroes anything: every candidate is the committed student
            logits = self.rest(*self._anchor_base(slice(0, self.batch)), *self.frontier)
            return self.divergence(logits.unsqueeze(0).expand(n, *logits.shape), self.teacher_logits)
        touched = zero_sets.view(torch.uint8).view(n, self.out_channels, -1).amax(-1).bool()  # [n, channels]
        sparse = self.next_layer is not None and float(touched.float().mean()) <= self.sparse_threshold
        self.path_used = "channel-sparse" if sparse else "dense"
        if sparse and self.dedup_channels:
            groups = self._channel_groups(zero_sets, touched)
            if sum(gr[2].shape[0] for gr in groups) <= self.dedup_ratio * int(touched.sum()):
                self.path_used = "channel-shared"
                return self.divergence(self._shared_call(groups, n), self.teacher_logits)
        if sparse:  # no gather: one example chunk, candidates one by one
            c_step = self.chunk_size or max(1, CHUNK_ELEMENTS // max(1, self.base_next_out[0].numel() * self.batch))
            logits = [self._sparse_chunk(zero_sets[c0:c0 + c_step], touched[c0:c0 + c_step])
                      for c0 in range(0, n, c_step)]
            return self.divergence(torch.cat(logits), self.teacher_logits)
        # A step's calls all draw from one pool: lay out (and gather G for) the whole pool once
        # and reuse it, when the pool is known, holds this call's positions and G fits the cache.
        cached = (self.pool_mask is not None and bool(self.pool_mask[pos].all())
                  and int(self.pool_mask.sum()) * self.L * self.batch <= CACHE_ELEMENTS)
        if cached and self._pool_layout is None:
            self._pool_layout = self._layout(torch.nonzero(self.pool_mask).flatten())
        layout = self._pool_layout if cached else self._layout(pos)
        weighted = self._weighted(layout, zero_sets)
        gather_per_example = sum(int(bk["cols"].numel()) for bk in layout) * self.L
        b_step = self.example_chunk or max(1, GATHER_ELEMENTS // max(1, gather_per_example))
        c_step = self.chunk_size or max(1, CHUNK_ELEMENTS // max(1, self.per_example_out * min(b_step, self.batch)))
        per_chunk = []
        for s in range(0, self.batch, b_step):
            ex = slice(s, min(self.batch, s + b_step))
            b = ex.stop - ex.start
            gathered = self._g_cache.get(s) if cached else None
            if gathered is None:
                # G[r, j, (b, l)] = the input feature that weight table[r, j] multiplies
                gathered = [torch.index_select(self.columns_t[:, ex], 0, bk["cols"]).view(bk["rows"].numel(), bk["m"], b * self.L)
                            for bk in layout]
                if cached:
                    self._g_cache[s] = gathered
            logits = [self._dense_chunk(layout, weighted, gathered, slice(c0, c0 + c_step), ex) for c0 in range(0, n, c_step)]
            per_chunk.append(torch.cat(logits))
        return self.divergence(torch.cat(per_chunk, dim=1), self.teacher_logits)

    def _anchor_base(self, ex: slice) -> tuple[torch.Tensor]:
        return (self.base_next_out[ex] if self.next_layer is not None else self.base_out[ex],)

    def _frontier(self, ex: slice) -> list[torch.Tensor]:
        return [f[ex] for f in self.frontier] if self.example_chunk != self.batch else self.frontier

    def _dense_chunk(self, layout: list[dict], weighted: list[torch.Tensor], gathered: list[torch.Tensor],
                     cand: slice, ex: slice):
        b = ex.stop - ex.start
        if len(layout) == 1 and layout[0]["rows"].numel() == self.out_channels:
            delta = torch.bmm(weighted[0][:, cand], gathered[0])                # rows already in order
            pc = delta.shape[1]
        else:
            pc = weighted[0][:, cand].shape[1]
            covered = sum(int(bk["rows"].numel()) for bk in layout) == self.out_channels
            # each bucket's [R_i, pc, b*L] rows land in channel order (whole blocks: plain copies)
            delta = (torch.empty if covered else torch.zeros)(self.out_channels, pc, b * self.L,
                                                              dtype=self.base_out.dtype, device=self.base_out.device)
            for bk, wt, g in zip(layout, weighted, gathered):
                delta.index_copy_(0, bk["rows"], torch.bmm(wt[:, cand], g))
        delta = delta.view(self.out_channels, pc, b, self.L).permute(1, 2, 0, 3)
        out = (self.base_out[ex].reshape(1, b, self.out_channels, self.L) - delta).view(pc, b, self.out_channels, *self.spatial)
        if self.next_layer is not None:  # chain exists but this call is dense: run it, then the next layer
            y = out.flatten(0, 1)
            for op in self.chain_ops:
                y = op(y)
            out = self.next_layer(y).unflatten(0, (pc, b))
        return self._rest_batched(out, *self._frontier(ex))

    def _sparse_chunk(self, zero_sets: torch.Tensor, touched: torch.Tensor):
        """Channel-sparse path: per candidate, the layer's delta (one GEMM on the cached im2col),
        the chain and the next layer on its touched channels only. Works channel-major
        ([channels, B, ...]): the chain's ops act on the last dims, so they do not mind."""
        w_next = self.next_layer.weight.detach()
        w_flat = self.weight.reshape(-1)
        columns = self.columns_t.view(self.fan_in, -1)                          # [fan_in, B*L]
        outs = self.base_next_out.unsqueeze(0).repeat(zero_sets.shape[0], *([1] * self.base_next_out.dim()))
        for i, (z, t) in enumerate(zip(zero_sets, touched)):
            ch = torch.nonzero(t).flatten()
            if ch.numel() == 0:
                continue  # nothing zeroed: the committed student's next-layer output
            w_zeroed = (w_flat * z.to(w_flat.dtype)).view(self.out_channels, -1)[ch]  # only the zeroed weights
            # base - W_zeroed @ im2col in one GEMM call (addmm, alpha=-1): no separate subtraction pass
            y = torch.addmm(self.base_out_cm[ch].view(ch.numel(), -1), w_zeroed, columns, alpha=-1)
            y = y.view(ch.numel(), self.batch, *self.spatial)
            for op in self.chain_ops:
                y = op(y)
            d = y.sub_(self.base_next_in_cm[ch]).transpose(0, 1).contiguous()   # [B, |T|, ...]
            outs[i] += self._nobias(self.next_layer, d, w_next[:, ch].contiguous())
        return self._rest_batched(outs, *self.frontier)

    # ------------------------------------------------------------------ shared channel subsets (4b)
    def _channel_groups(self, zero_sets: torch.Tensor, touched: torch.Tensor) -> list[tuple]:
        """Per touched channel t: ``(t, cols, table, cand, inv)`` — the m positions of t that any
        candidate zeroes (``cols``), the distinct non-empty subsets of them as weight rows
        (``table`` [U, m]: the weight where the subset zeroes, else 0), the candidates touching t
        (``cand``) and which subset each carries (``inv``)."""
        n = zero_sets.shape[0]
        zs = zero_sets.view(n, self.out_channels, self.fan_in)
        w = self.weight.reshape(self.out_channels, self.fan_in)
        groups = []
        for t in torch.nonzero(touched.any(0)).flatten().tolist():
            cand = torch.nonzero(touched[:, t]).flatten()
            sub = zs[cand, t]                                                     # [n_t, fan_in]
            cols = torch.nonzero(sub.view(torch.uint8).amax(0)).flatten()
            uniq, inv = torch.unique(sub[:, cols].view(torch.uint8), dim=0, return_inverse=True)
            groups.append((t, cols, uniq.to(w.dtype) * w[t, cols], cand, inv))
        return groups

    def _shared_call(self, groups: list[tuple], n: int) -> torch.Tensor:
        """Logits ``[n, B, classes]`` from the distinct (channel, subset) pairs. Per example chunk, the
        shares of all pairs are rows of one table (row 0: the committed student's next-layer
        output) and every candidate's next-layer output is the sum of its rows — one
        ``embedding_bag`` (each output written once; ``index_select`` + ``index_add_`` per channel
        took ~3x its time in the profile of LeNet-5 conv1). The table and the outputs of one chunk
        stay within ``SHARED_ELEMENTS``."""
        distinct = sum(gr[2].shape[0] for gr in groups)
        # each candidate's bag: row 0, then its subset's row in every channel it touches
        rows, owner, offset = [], [], 1
        for _t, _cols, table, cand, inv in groups:
            rows.append(inv + offset)
            owner.append(cand)
            offset += table.shape[0]
        rows, owner = torch.cat(rows), torch.cat(owner)
        # sorted by bag (stable: row 0 first in each), offsets = where each bag starts
        indices = torch.cat([torch.zeros(n, dtype=torch.long, device=rows.device), rows])
        indices = indices[torch.argsort(torch.cat([torch.arange(n, device=rows.device), owner]), stable=True)]
        sizes = torch.bincount(owner, minlength=n) + 1
        offsets = torch.cumsum(sizes, 0) - sizes
        next_numel = self.base_next_out[0].numel()
        b_step = max(1, SHARED_ELEMENTS // max(1, (1 + distinct + n) * next_numel))
        if self.example_chunk is not None:
            b_step = min(b_step, self.example_chunk)
        if self.example_chunk == self.batch:  # some upstream value is not per-example
            b_step = self.batch
        return torch.cat([self._shared_chunk(groups, n, distinct, indices, offsets,
                                             slice(s, min(self.batch, s + b_step)))
                          for s in range(0, self.batch, b_step)], dim=1)

    def _shared_chunk(self, groups: list[tuple], n: int, distinct: int, indices: torch.Tensor,
                      offsets: torch.Tensor, ex: slice) -> torch.Tensor:
        b = ex.stop - ex.start
        # channels-last rows [positions * out] per example: every share is one plain GEMM output
        table = torch.empty(1 + distinct, b * self.base_next_out[0].numel(), dtype=self.base_out.dtype,
                            device=self.base_out.device)
        table[0] = self._base_next_cl[ex].reshape(-1)
        row = 1
        for t, cols, weights, _cand, _inv in groups:
            u = weights.shape[0]
            g = self.columns_t[cols, ex].reshape(cols.numel(), -1)                # [m, b*L] input features
            # base - (zeroed weights) @ features for every distinct subset at once (addmm, alpha=-1)
            y = torch.addmm(self.base_out_cm[t, ex].reshape(1, -1), weights, g, alpha=-1).view(u, b, *self.spatial)
            for op in self.chain_ops:
                y = op(y)
            d = y - self.base_next_in_cm[t, ex]                                   # the chain's change on t
            self._share(d, t, out=table[row:row + u])
            row += u
        outs = F.embedding_bag(indices, table, offsets, mode="sum")              # [n, b * next_numel]
        out_ch = self.base_next_out.shape[1]
        outs = outs.view(n, b, -1, out_ch).transpose(2, 3).reshape(n, b, *self.base_next_out.shape[1:])
        return self._rest_batched(outs, *self._frontier(ex))

    def _share(self, d: torch.Tensor, t: int, out: torch.Tensor) -> None:
        """Channel t's share of the next layer for input change ``d`` [u, b, ...], written
        channels-last into ``out`` ``[u, b * positions * out_channels]`` (a table slice: no copy):
        an im2col of the one-channel maps (strided views, one copy) times ``W_n[:, t]`` — one GEMM
        (a one-input-channel ``conv2d`` ran ~6x slower per MAC here); for a Linear, the outer
        product with ``W_n[:, t]``."""
        u, b = d.shape[:2]
        w = self._w_next_cl[t]                                                    # [taps, out_channels]
        if isinstance(self.next_layer, nn.Linear):
            torch.mul(d.reshape(u * b, 1), w, out=out.view(u * b, -1))
            return
        (ph, pw), (kh, kw), (sh, sw) = self._next_geometry
        if ph or pw:
            d = F.pad(d, (pw, pw, ph, ph))
        patches = d.unfold(2, kh, sh).unfold(3, kw, sw)                          # [u, b, Ho, Wo, kh, kw] view
        torch.mm(patches.reshape(-1, kh * kw), w, out=out.view(-1, w.shape[1]))
