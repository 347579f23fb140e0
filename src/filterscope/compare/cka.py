"""Linear CKA between layers (Kornblith et al. 2019), debiased for small samples (Nguyen et al. 2021).

A layer's representation of ``n`` images is a matrix ``X`` ``(n, d)``: each image's activations pooled to a small
grid and flattened (:func:`image_features`), each feature standardized over the images (so a unit's scale does
not count: two layers whose units are the same up to order and positive scale have CKA 1). Its Gram matrix
``K = X Xᵀ`` is all CKA needs, so every layer pair of two networks costs one inner product of Gram matrices:

- biased: ``HSIC(K, L) = tr(KHLH) / (n-1)²`` with the centring matrix ``H``;
- debiased (the unbiased HSIC estimator of Song et al. 2012, as in Kornblith's reference code): the diagonals
  zeroed and the estimator's correction terms, so that CKA of unrelated representations sits near 0 even when
  ``d`` is large against ``n``;

``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``.

Hand-written: a dozen lines of torch; the libraries that have it (``torch_cka``, ``anatome``) pull torchvision or
hold every activation in memory.
"""

from __future__ import annotations

import torch

__all__ = ["image_features", "gram", "hsic", "cka", "cka_matrix"]


def image_features(activations: torch.Tensor, grid: int = 2) -> torch.Tensor:
    """``(N, D)``: each image's activations ``(N, C, H, W)`` (or ``(N, C)``) averaged over a ``grid`` x ``grid``
    grid of regions and flattened (``D = C grid²``; ``grid`` 1: the spatial mean)."""
    if activations.dim() == 2:
        return activations.float()
    pooled = torch.nn.functional.adaptive_avg_pool2d(activations.float(), grid)
    return pooled.flatten(1)


def gram(features: torch.Tensor, *, standardize: bool = True) -> torch.Tensor:
    """The Gram matrix ``(N, N)`` (float64) of ``features`` ``(N, D)``, each feature standardized over the images
    first (a constant feature is dropped)."""
    x = features.double()
    x = x - x.mean(dim=0)
    if standardize:
        spread = x.std(dim=0)
        x = x[:, spread > 1e-12] / spread[spread > 1e-12]
    return x @ x.T


def hsic(k: torch.Tensor, l: torch.Tensor, *, debiased: bool = True) -> float:  # noqa: E741 (the paper's name)
    """The HSIC of two Gram matrices ``(n, n)``: biased (centred) or the unbiased estimator (``n`` at least 4)."""
    n = k.shape[0]
    if not debiased:
        h = torch.eye(n, dtype=k.dtype) - 1.0 / n
        return float(torch.trace(h @ k @ h @ l)) / (n - 1) ** 2
    k, l = k.clone(), l.clone()  # noqa: E741
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    ones_k, ones_l = k.sum(dim=0), l.sum(dim=0)  # K̃1 and L̃1
    value = (k * l).sum() + ones_k.sum() * ones_l.sum() / ((n - 1) * (n - 2)) - 2 * (ones_k @ ones_l) / (n - 2)
    return float(value) / (n * (n - 3))


def cka(k: torch.Tensor, l: torch.Tensor, *, debiased: bool = True) -> float:  # noqa: E741
    """Linear CKA of two Gram matrices (0 where either has no spread)."""
    denominator = hsic(k, k, debiased=debiased) * hsic(l, l, debiased=debiased)
    return hsic(k, l, debiased=debiased) / denominator ** 0.5 if denominator > 0 else 0.0


def cka_matrix(grams_a: list[torch.Tensor], grams_b: list[torch.Tensor], *, debiased: bool = True) -> torch.Tensor:
    """``(len(grams_a), len(grams_b))``: CKA of every pair."""
    def prepared(k: torch.Tensor) -> tuple[torch.Tensor, float]:
        if debiased:
            k = k.clone()
            k.fill_diagonal_(0)
        return k, hsic(k, k, debiased=debiased)

    a, b = [prepared(k) for k in grams_a], [prepared(k) for k in grams_b]
    out = torch.zeros(len(a), len(b), dtype=torch.float64)
    for i, (k, self_k) in enumerate(a):
        for j, (l, self_l) in enumerate(b):  # noqa: E741
            out[i, j] = hsic(k, l, debiased=debiased) / (self_k * self_l) ** 0.5 if self_k * self_l > 0 else 0.0
    return out
