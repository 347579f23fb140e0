"""What a dictionary of a layer is: anything with ``encode`` and ``decode`` over its activation vectors.

:class:`Dictionary` is the protocol every concept tool takes: :class:`~.sae.SparseAutoencoder` trained here, or
a dictionary made elsewhere (an ``overcomplete`` model, NMF, PCA) wrapped in an object with the two methods.
The baselines a dictionary is measured against are dictionaries too (:class:`SparseBasis`): the raw channels and
a PCA of the layer, each keeping the ``k`` largest coefficients of a vector, so that they are compared at the
same sparsity.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["Dictionary", "Normalizer", "SparseBasis", "atoms_of", "channel_basis", "pca_basis"]


@runtime_checkable
class Dictionary(Protocol):
    """A dictionary of a layer: ``encode`` takes raw activation vectors ``(N, C)`` to codes ``(N, K)`` (concept
    activations, mostly zero), ``decode`` takes codes back to vectors ``(N, C)``."""

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


class Normalizer(nn.Module):
    """Centre the vectors and scale them so their mean norm is ``sqrt(C)`` (as the SAE literature trains): what
    a dictionary learns does not depend on the layer's scale."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)

    @classmethod
    def fit(cls, vectors: torch.Tensor) -> Normalizer:
        mean = vectors.double().mean(0)
        norm = (vectors.double() - mean).norm(dim=1).mean()
        return cls(mean.float(), (vectors.shape[1] ** 0.5 / norm.clamp(min=1e-12)).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.scale

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.scale + self.mean


class SparseBasis:
    """A basis of the layer (``(K, C)`` orthonormal rows) that keeps each vector's ``k`` largest coefficients
    (by magnitude, about the mean): the raw channels or a PCA as a dictionary of the same sparsity. Codes are
    signed; a concept of a basis is one of its rows."""

    def __init__(self, rows: torch.Tensor, mean: torch.Tensor, k: int, name: str) -> None:
        self.rows, self.mean, self.k, self.name = rows.float(), mean.float(), min(k, rows.shape[0]), name

    @property
    def atoms(self) -> torch.Tensor:
        return self.rows

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        coefficients = (x - self.mean) @ self.rows.T
        index = coefficients.abs().topk(self.k, dim=1).indices
        return torch.zeros_like(coefficients).scatter(1, index, coefficients.gather(1, index))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.rows + self.mean


def channel_basis(vectors: torch.Tensor, k: int) -> SparseBasis:
    """The raw channels as a dictionary: each vector keeps its ``k`` channels furthest from their mean."""
    return SparseBasis(torch.eye(vectors.shape[1]), vectors.mean(0), k, "channels")


def pca_basis(vectors: torch.Tensor, k: int, components: int | None = None) -> SparseBasis:
    """A PCA of the vectors (``components``, at most the channels; default all) keeping ``k`` coefficients."""
    mean = vectors.double().mean(0)
    _, _, vh = torch.linalg.svd(vectors.double() - mean, full_matrices=False)
    return SparseBasis(vh[:components or vh.shape[0]], mean, k, "PCA")


def atoms_of(dictionary: Dictionary, atoms: int | None = None) -> torch.Tensor:
    """``(K, C)`` unit directions of a dictionary's concepts: its ``atoms`` where it has them, otherwise what
    decoding each one-hot code adds to decoding zero (``atoms``: K, needed then)."""
    found = getattr(dictionary, "atoms", None)
    if isinstance(found, torch.Tensor):
        rows = found.float()
    else:
        if atoms is None:
            raise ValueError("a dictionary without .atoms needs the number of atoms")
        rows = dictionary.decode(torch.eye(atoms)) - dictionary.decode(torch.zeros(1, atoms))
    return rows / rows.norm(dim=1, keepdim=True).clamp(min=1e-12)
