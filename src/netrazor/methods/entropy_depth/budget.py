"""The entropy-guided pruning budget of EGP / NEPENTHE (METHODS.md §3, [CODE] of EGP).

Per round the budget is B = zeta * (alive prunable weights). Each still-nonlinear layer l gets
    I_l = sum_k H_k m_k / (H_l m_l)        (irrelevance: low entropy, small weights -> high I)
    s_l = softmax(I)_l,   b_l = B s_l
with m_l the mean |w| of the surviving weights of the layer(s) feeding rectifier l. A share larger
than the layer's alive weights is capped (that layer is emptied); as in the EGP code, the capped
layers leave the pool (their H m leaves the sum, so I is recomputed over the rest) and the budget
left is shared again by softmax(I) over the uncapped layers, until no share exceeds its cap.

[REC] ``layer_cap`` (default 1.0 = EGP) caps a layer's budget at that fraction of its alive
weights. Why it exists: I_l grows as m_l shrinks, and m_l ~ 1/sqrt(fan-in) after training, so the
largest layers have the largest I and the softmax (I is of the order of the number of layers)
hands them more than they hold: EGP's rule empties a layer per round. In a residual block that
removes a branch; in a plain net (VGG) it cuts the only signal path and the net drops to chance
(measured: fmnist-vgg11 at T = 1 emptied conv5_2 in round 1). A temperature does not help there:
a flat softmax gives every layer the same absolute count, which empties the small early layers
(at T = 10 conv1_1, conv2_1 and conv3_1 of VGG-11 x0.25).

[REC] H_l m_l = 0 (a layer about to be linearised, or with no surviving weight) would divide by
zero. Such layers are linearised/excluded by the method before the budget is computed; as a second
guard the denominator is floored at ``eps`` (default 1e-12), which gives the layer the largest
irrelevance (it is pruned first), the limit the formula tends to.

Integer budgets: shares are rounded down and the leftover units go, largest fractional part first,
to layers with room left, so the integer budgets sum to exactly round(B) and never exceed the
alive weights.
"""

from __future__ import annotations

import math
from typing import Mapping

from netrazor.errors import ConfigError


def irrelevance(entropy: Mapping[str, float], magnitude: Mapping[str, float], eps: float = 1e-12) -> dict[str, float]:
    """I_l = sum_k H_k m_k / max(H_l m_l, eps) over the layers given."""
    names = list(entropy)
    products = {n: float(entropy[n]) * float(magnitude[n]) for n in names}
    total = sum(products.values())
    return {n: total / max(products[n], eps) for n in names}


def softmax(values: Mapping[str, float]) -> dict[str, float]:
    """Numerically safe softmax (max subtracted; infinities treated as the largest finite value)."""
    if not values:
        return {}
    finite = [v for v in values.values() if math.isfinite(v)]
    top = max(finite) if finite else 0.0
    exps = {n: math.exp((v if math.isfinite(v) else top) - top) for n, v in values.items()}
    z = sum(exps.values())
    return {n: e / z for n, e in exps.items()}


def share_budget(budget: float, shares: Mapping[str, float], alive: Mapping[str, int]) -> dict[str, float]:
    """Split ``budget`` by fixed ``shares``, capping at ``alive`` and re-sharing the excess until stable."""
    return _share_capped(budget, lambda open_: {n: shares[n] for n in open_}, alive)


def _share_capped(budget: float, shares_of, caps: Mapping[str, float]) -> dict[str, float]:
    """Share ``budget`` by ``shares_of(open layers)``; a layer whose share reaches its cap gets the
    cap and leaves the pool, and the rest is shared again over the layers still open."""
    if budget < 0:
        raise ConfigError(f"budget must be >= 0, got {budget}.")
    budget = min(float(budget), float(sum(caps[n] for n in caps)))
    out = {n: 0.0 for n in caps}
    # a list, not a set: string hashing varies per process, and the float sums must not
    open_ = [n for n in caps if caps[n] > 0]
    remaining = budget
    while open_ and remaining > 1e-9:
        shares = shares_of(open_)
        weight = sum(shares[n] for n in open_)
        if weight < 1e-300:  # all open shares underflowed: share equally
            proposal = {n: remaining / len(open_) for n in open_}
        else:  # normalise first, then scale: products of subnormals lose all precision
            proposal = {n: (shares[n] / weight) * remaining for n in open_}
        capped = [n for n in open_ if out[n] + proposal[n] >= caps[n] - 1e-9]
        if not capped:
            for n in open_:
                out[n] += proposal[n]
            break
        for n in capped:  # a capped layer gets its cap; its excess goes back into the pool
            remaining -= caps[n] - out[n]
            out[n] = float(caps[n])
        open_ = [n for n in open_ if n not in capped]
    return out


def integer_budget(fractional: Mapping[str, float], alive: Mapping[str, int], total: int) -> dict[str, int]:
    """Round shares to integers summing to ``total`` (largest remainder), each within ``alive``."""
    out = {n: min(int(math.floor(v + 1e-9)), int(alive[n])) for n, v in fractional.items()}
    left = int(total) - sum(out.values())
    order = sorted(fractional, key=lambda n: (fractional[n] - math.floor(fractional[n] + 1e-9)), reverse=True)
    while left > 0:
        progressed = False
        for n in order:
            if left == 0:
                break
            if out[n] < alive[n]:
                out[n] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return out


def allocate(
    entropy: Mapping[str, float],
    magnitude: Mapping[str, float],
    alive: Mapping[str, int],
    zeta: float = 0.5,
    eps: float = 1e-12,
    temperature: float = 1.0,
    layer_cap: float = 1.0,
) -> dict[str, int]:
    """Weights to prune per layer this round: B = zeta * sum(alive), shared by softmax(I / temperature).

    Returns integer budgets that sum to min(round(B), sum of caps) and never exceed
    floor(layer_cap * alive) (``alive`` itself at the default 1.0, EGP's rule).
    [REC] ``temperature`` (default 1: the EGP rule) is our knob: I_l is of the order of the number
    of layers, so softmax(I) is close to an arg-max and usually empties one layer per round; a
    temperature > 1 spreads the budget over layers, but in equal absolute counts (see the module
    docstring for why that empties small layers). [REC] ``layer_cap`` < 1 keeps every layer alive.
    """
    if not 0.0 <= zeta <= 1.0:
        raise ConfigError(f"zeta must be in [0, 1], got {zeta}; it is the fraction of alive weights pruned per round.")
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}; 1 is the EGP rule.")
    if not 0.0 < layer_cap <= 1.0:
        raise ConfigError(f"layer_cap must be in (0, 1], got {layer_cap}; it is the largest fraction of a layer pruned per round (1 = EGP).")
    names = [n for n in entropy if alive.get(n, 0) > 0]
    if not names:
        return {n: 0 for n in entropy}
    caps = {n: int(math.floor(layer_cap * int(alive[n]) + 1e-9)) for n in names}
    budget = min(int(round(zeta * sum(int(alive[n]) for n in names))), sum(caps.values()))

    def shares_of(open_: list[str]) -> dict[str, float]:
        # EGP recomputes I over the layers still open: a capped layer's H m leaves the sum.
        irr = irrelevance({n: entropy[n] for n in open_}, {n: magnitude[n] for n in open_}, eps)
        return softmax({n: v / temperature for n, v in irr.items()})

    fractional = _share_capped(budget, shares_of, caps)
    result = integer_budget(fractional, caps, budget)
    return {n: result.get(n, 0) for n in entropy}
