"""The semantic dictionary of an image at a layer: at every position, the units that fire most there.

("The Building Blocks of Interpretability", Olah et al. 2018.) One forward pass truncated at the layer; at each
position of its grid the ``k`` units with the highest activation and their values. Each unit is shown by its
optimized image (an atlas's, or rendered on demand by the caller): the dictionary only names the units.
Ties (a ReLU's zeros) rank the lower unit first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..analysis.inputs import AnalysisImage
from ..arguments import checked
from ..errors import InvalidOptionError
from ..layers import LayerRef
from ..zoo.model import LoadedModel
from .activations import ImageLike, layer_activations

__all__ = ["SemanticDictionary", "semantic_dictionary"]


@dataclass(frozen=True)
class SemanticDictionary:
    """Attributes:
        layer: The layer.
        image: The image in the network's view.
        activations: ``(C, H, W)`` at the layer.
        units: ``(H, W, k)`` the top units at each position, strongest first.
        values: ``(H, W, k)`` their activations.
    """

    layer: LayerRef
    image: AnalysisImage
    activations: torch.Tensor
    units: torch.Tensor
    values: torch.Tensor

    def strongest(self, count: int = 8) -> list[tuple[int, int]]:
        """The ``count`` positions ``(y, x)`` whose top unit fires most, strongest first."""
        flat = self.values[..., 0].flatten()
        order = torch.argsort(flat, descending=True, stable=True)[:count].tolist()
        width = self.values.shape[1]
        return [divmod(i, width) for i in order]

    def at(self, y: int, x: int) -> list[tuple[int, float]]:
        """The top units at ``(y, x)`` with their values."""
        return [(int(u), float(v)) for u, v in zip(self.units[y, x], self.values[y, x])]

    def to_dict(self) -> dict[str, object]:
        return {"layer": str(self.layer), "image": self.image.name, "grid": list(self.units.shape[:2]),
                "units": self.units.tolist(), "values": self.values.tolist()}


@checked
def semantic_dictionary(model: LoadedModel | torch.nn.Module, image: ImageLike, layer: str | LayerRef, *, k: int = 4,
                        fit: str = "crop") -> SemanticDictionary:
    """The top ``k`` units at every position of ``layer`` for ``image`` (see the module docstring)."""
    if k < 1:
        raise InvalidOptionError(f"k must be at least 1 (got {k})")
    _, seen, ref, acts = layer_activations(model, image, layer, fit=fit)
    k = min(k, acts.shape[0])
    units = torch.argsort(acts, dim=0, descending=True, stable=True)[:k]  # ties: the lower unit first
    values = torch.gather(acts, 0, units)
    return SemanticDictionary(ref, seen, acts, units.permute(1, 2, 0), values.permute(1, 2, 0))
