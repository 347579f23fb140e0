"""Neuron groups: a layer's activations over one image factored into a few groups of units.

The ``(H·W, C)`` activation matrix ``A`` is factored by non-negative matrix factorization (scikit-learn's
``NMF``, ``nndsvda`` start, seeded) into ``W (H·W, n)`` and ``H (n, C)``: group ``g`` covers the part of the
image where ``W[:, g]`` is large (its heat map) with the units weighted by ``H[g]`` (its channel vector, which a
:class:`~filterscope.objectives.Direction` objective renders). NMF needs ``A >= 0``; for a layer with signed
outputs, ``part="positive"`` factors ``max(A, 0)`` and ``part="split"`` factors ``[max(A, 0), max(-A, 0)]``
side by side (each group then has a positive and a negative channel vector; its direction is their
difference). ``explained`` is ``1 - |A' - WH|² / |A'|²`` for the factored ``A'``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..analysis.inputs import AnalysisImage
from ..arguments import checked
from ..errors import InvalidOptionError
from ..layers import LayerRef
from ..zoo.model import LoadedModel
from .activations import ImageLike, layer_activations

__all__ = ["NeuronGroups", "neuron_groups", "PARTS"]

PARTS = ("positive", "split")


@dataclass(frozen=True)
class NeuronGroups:
    """Attributes:
        layer: The layer.
        image: The image in the network's view.
        part: What was factored: ``positive`` (``max(A, 0)``) or ``split`` (positive and negative parts).
        signed: Whether the layer's activations had negative values on this image.
        spatial: ``(n, H, W)`` each group's heat map (``W`` reshaped).
        channels: ``(n, C)`` each group's direction over the layer's units (``split``: positive minus negative).
        factors: ``(n, C)`` or ``(n, 2C)``: the factor ``H`` as NMF found it.
        explained: The share of the factored matrix's squared norm the groups reconstruct.
        converged: Whether NMF converged within its iterations.
    """

    layer: LayerRef
    image: AnalysisImage
    part: str
    signed: bool
    spatial: torch.Tensor
    channels: torch.Tensor
    factors: torch.Tensor
    explained: float
    converged: bool

    def __len__(self) -> int:
        return int(self.spatial.shape[0])

    def to_dict(self) -> dict[str, object]:
        return {"layer": str(self.layer), "image": self.image.name, "part": self.part, "signed": self.signed,
                "explained": self.explained, "converged": self.converged, "spatial": self.spatial.tolist(),
                "channels": self.channels.tolist()}


def _factored(acts: torch.Tensor, part: str) -> np.ndarray:
    matrix = acts.flatten(1).T.double().numpy()  # (H*W, C)
    if part == "positive":
        return np.maximum(matrix, 0.0)
    return np.concatenate([np.maximum(matrix, 0.0), np.maximum(-matrix, 0.0)], axis=1)


@checked
def neuron_groups(model: LoadedModel | torch.nn.Module, image: ImageLike, layer: str | LayerRef, *, n: int = 6,
                  part: str = "positive", seed: int = 0, fit: str = "crop", max_iter: int = 1000) -> NeuronGroups:
    """Factor ``layer``'s activations over ``image`` into ``n`` groups (see the module docstring)."""
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    if part not in PARTS:
        raise InvalidOptionError(f"Unknown part {part!r}: use {' or '.join(PARTS)}")
    if n < 1:
        raise InvalidOptionError(f"n must be at least 1 (got {n})")
    _, seen, ref, acts = layer_activations(model, image, layer, fit=fit)
    channels, height, width = acts.shape
    matrix = _factored(acts, part)
    if not np.any(matrix > 0):
        raise InvalidOptionError(f"Layer {ref} has no positive activation on {seen.name}: nothing to factor "
                                 "(try part='split' for a layer with signed outputs)")
    n = min(n, min(matrix.shape))
    nmf = NMF(n_components=n, init="nndsvda", random_state=seed, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        w = nmf.fit_transform(matrix)
    converged = not any(issubclass(c.category, ConvergenceWarning) for c in caught)
    h = nmf.components_
    residual = float(np.sum((matrix - w @ h) ** 2))
    explained = 1.0 - residual / float(np.sum(matrix ** 2))
    factors = torch.from_numpy(h).float()
    direction = factors if part == "positive" else factors[:, :channels] - factors[:, channels:]
    spatial = torch.from_numpy(w.T.reshape(n, height, width)).float()
    return NeuronGroups(ref, seen, part, bool((acts < 0).any()), spatial, direction, factors, explained, converged)
