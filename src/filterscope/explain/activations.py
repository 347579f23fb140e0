"""One image's activations at one layer (and, for attribution, their gradient), as the explanations read them."""

from __future__ import annotations

import os

import torch
from PIL import Image

from ..analysis.inputs import AnalysisImage, prepare_image
from ..errors import InvalidOptionError
from ..layers import Capture, LayerRef, resolve_layer
from ..zoo.model import LoadedModel, coerce_model, frozen

__all__ = ["ImageLike", "as_image", "layer_activations"]

ImageLike = str | os.PathLike[str] | Image.Image | AnalysisImage
"""An image as the explanations take it: a path, a PIL image, or one already in the network's view."""


def as_image(model: LoadedModel, image: ImageLike, fit: str) -> AnalysisImage:
    """``image`` in ``model``'s view (``fit``: crop, squash or pad)."""
    if isinstance(image, AnalysisImage):
        return image
    return prepare_image(model, image, fit=fit)


def layer_activations(model: LoadedModel | torch.nn.Module, image: ImageLike, layer: str | LayerRef, *,
                      fit: str = "crop") -> tuple[LoadedModel, AnalysisImage, LayerRef, torch.Tensor]:
    """The model, the image in its view, the layer, and the layer's ``(C, H, W)`` float32 activations."""
    loaded = coerce_model(model)
    ref = resolve_layer(loaded, layer)
    seen = as_image(loaded, image, fit)
    with frozen(loaded.module), torch.no_grad(), Capture(loaded, [ref]) as capture:
        out = capture(loaded.preprocessing.normalize(seen.pixels[None].to(loaded.device)))[ref].float().cpu()[0]
    if out.dim() != 3:
        raise InvalidOptionError(f"Layer {ref} of {loaded.name} gives shape {tuple(out.shape)}: explaining an image "
                                 "needs a layer with a spatial grid (C, H, W)")
    return loaded, seen, ref, out
