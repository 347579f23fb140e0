"""Spatial attribution: how each position (and each neuron group) of a layer drives a class for one image.

Activation × gradient at the layer: with ``a`` the layer's ``(C, H, W)`` activations and ``z`` the class's
logit, ``map[y, x] = sum_c a[c, y, x] * dz/da[c, y, x]``. For a head that is linear in ``a`` (a global average
pool and a linear layer), the map sums to ``z - bias``: the attribution is complete. The gradient is kept, so
that a neuron group's share, the sum of ``A_g * dz/da`` over the grid for its part ``A_g = W[:, g] H[g]`` of the
factored activations, follows without another pass (:meth:`SpatialAttribution.of_groups`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..analysis.inputs import AnalysisImage
from ..arguments import checked
from ..errors import ChannelError, InvalidOptionError
from ..hooks import Intervene, Leaf, source_calls
from ..layers import OUTPUT, Capture, LayerRef, resolve_layer
from ..zoo.model import LoadedModel, coerce_model, frozen
from .activations import ImageLike, as_image
from .groups import NeuronGroups

__all__ = ["SpatialAttribution", "spatial_attribution"]


@dataclass(frozen=True)
class SpatialAttribution:
    """Attributes:
        layer: The layer.
        image: The image in the network's view.
        target: The class (output index) explained; ``name`` its name when the model has class names.
        logit: The class's logit.
        map: ``(H, W)`` activation × gradient summed over the units.
        units: ``(C,)`` the same summed over the grid: each unit's share.
        activations: ``(C, H, W)``, and ``gradient`` the class logit's gradient with respect to them.
    """

    layer: LayerRef
    image: AnalysisImage
    target: int
    name: str | None
    logit: float
    map: torch.Tensor
    units: torch.Tensor
    activations: torch.Tensor
    gradient: torch.Tensor

    @property
    def total(self) -> float:
        return float(self.map.sum())

    def of_groups(self, groups: NeuronGroups) -> torch.Tensor:
        """``(n,)``: each group's attribution, ``sum(A_g * gradient)`` (the groups of the same image and layer)."""
        if tuple(groups.spatial.shape[1:]) != tuple(self.map.shape) or groups.layer != self.layer:
            raise InvalidOptionError("the groups are not of this layer and image")
        channels = self.activations.shape[0]
        positive = groups.factors[:, :channels]
        negative = groups.factors[:, channels:] if groups.part == "split" else torch.zeros_like(positive)
        direction = positive - negative  # A_g = spatial_g (x) direction_g
        return torch.einsum("nhw,nc,chw->n", groups.spatial, direction, self.gradient)

    def to_dict(self) -> dict[str, object]:
        return {"layer": str(self.layer), "image": self.image.name, "target": self.target, "name": self.name,
                "logit": self.logit, "total": self.total, "map": self.map.tolist()}


@checked
def spatial_attribution(model: LoadedModel | torch.nn.Module, image: ImageLike, layer: str | LayerRef, *,
                        target: int | None = None, fit: str = "crop") -> SpatialAttribution:
    """Attribution of class ``target`` (default: the top class) to each position of ``layer`` (module docstring)."""
    loaded = coerce_model(model)
    ref, out = resolve_layer(loaded, layer), resolve_layer(loaded, OUTPUT)
    seen = as_image(loaded, image, fit)
    leaf = Leaf()
    with frozen(loaded.module), torch.enable_grad(), Intervene(loaded, ref, leaf, source_calls(loaded, ref)), \
            Capture(loaded, [out]) as capture:
        logits = capture(loaded.preprocessing.normalize(seen.pixels[None].to(loaded.device)))[out].float()
    if logits.dim() != 2 or leaf.tensor is None or leaf.tensor.dim() != 4:
        raise InvalidOptionError(f"Spatial attribution needs class logits (B, classes) and a layer with a grid; "
                                 f"{loaded.name} gives {tuple(logits.shape)} at its output")
    chosen = int(logits[0].argmax()) if target is None else int(target)
    if not 0 <= chosen < logits.shape[1]:
        raise ChannelError(f"Class {chosen} is out of range for {loaded.name}, which has {logits.shape[1]} classes "
                           f"(0-{logits.shape[1] - 1})")
    (grad,) = torch.autograd.grad(logits[0, chosen], leaf.tensor)
    a, g = leaf.tensor.detach()[0].cpu(), grad[0].cpu()
    product = a * g
    names = loaded.categories
    name = names[chosen] if names and chosen < len(names) else None
    return SpatialAttribution(ref, seen, chosen, name, float(logits[0, chosen].detach()), product.sum(dim=0),
                              product.flatten(1).sum(dim=1), a, g)
