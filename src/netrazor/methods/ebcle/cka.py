"""Linear CKA (Kornblith et al., 2019, "Similarity of Neural Network Representations Revisited").

Representations are flattened per example (``[n, ...] -> [n, p]``). With the linear kernel,
``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with Gram matrices ``K = X X^T`` and
``L = Y Y^T``; we work with the ``n x n`` Gram matrices, so the cost is O(n^2 p) whatever the width.

``debiased=True`` uses the unbiased HSIC estimator of Song et al. (2012), as in Nguyen et al.
(2021): the plain estimator is biased towards 1 when the feature dimension p is much larger than
the number of examples n (the Gram matrices of any two wide random representations approach a
scaled identity), which is exactly the regime of conv feature maps on a probe batch.
"""

from __future__ import annotations

import torch

from netrazor.errors import ConfigError


def _gram(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(x.shape[0], -1).double()
    return x @ x.T


def _center(k: torch.Tensor) -> torch.Tensor:
    # H K H with H = I - 11^T/n, done with means instead of a matrix product.
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


def _hsic_biased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    return (_center(k) * _center(l)).sum()


def _hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    # Song et al. (2012), eq. 5; needs n > 3.
    n = k.shape[0]
    k = k.clone().fill_diagonal_(0)
    l = l.clone().fill_diagonal_(0)
    ones = torch.ones(n, dtype=k.dtype)
    term1 = (k * l).sum()
    term2 = k.sum() * l.sum() / ((n - 1) * (n - 2))
    term3 = 2.0 * (ones @ k) @ (l @ ones) / (n - 2)
    return (term1 + term2 - term3) / (n * (n - 3))


def gram(x: torch.Tensor) -> torch.Tensor:
    """The linear-kernel Gram matrix ``X X^T`` (float64, ``[n, n]``) of a flattened representation.

    The probe keeps only these (O(n^2) memory per block) instead of the feature maps."""
    return _gram(x.detach().cpu())


def linear_cka(x: torch.Tensor, y: torch.Tensor, debiased: bool = False) -> float:
    """Linear CKA between two representations of the same ``n`` examples (1 = same up to
    rotation and isotropic scale, ~0 = unrelated). Features are centred over the examples."""
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"CKA needs the same examples in both representations, got {x.shape[0]} and {y.shape[0]}.")
    return cka_from_grams(gram(x), gram(y), debiased)


def cka_from_grams(k: torch.Tensor, l: torch.Tensor, debiased: bool = False) -> float:
    """Linear CKA from two Gram matrices of the same examples (see :func:`gram`)."""
    n = k.shape[0]
    if n < (5 if debiased else 2):
        raise ConfigError(f"CKA needs at least {5 if debiased else 2} examples, got {n}; use a larger probe batch.")
    hsic = _hsic_unbiased if debiased else _hsic_biased
    xy, xx, yy = hsic(k, l), hsic(k, k), hsic(l, l)
    denom = torch.sqrt(xx.clamp_min(0) * yy.clamp_min(0))
    if float(denom) <= 0.0:
        # A constant representation carries no information: define its similarity as 0.
        return 0.0
    return float(xy / denom)
