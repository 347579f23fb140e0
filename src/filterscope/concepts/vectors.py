"""A layer's activation vectors over images: every position of every image (or some, drawn by their norm), of
the image, its mirror image and random views of it, with where each vector came from."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..analysis.inputs import augmentations
from ..layers import LayerRef
from ..runtime.core import ANALYSIS_BATCH, Forward, Runtime
from ..zoo.model import LoadedModel

__all__ = ["ActivationVectors", "collect_vectors", "layer_grids"]

_CHUNK = 64  # images whose random views are made and run at once


@dataclass(frozen=True)
class ActivationVectors:
    """Vectors ``(N, C)`` of a layer and, for each, its image's index, its position ``(y, x)`` in the layer's grid
    (of the view it came from) and the view: 0 the image, 1 its mirror image, 2 and up random views."""

    vectors: torch.Tensor
    image: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor
    view: torch.Tensor

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @staticmethod
    def joined(parts: list[ActivationVectors]) -> ActivationVectors:
        return ActivationVectors(*(torch.cat([getattr(p, f) for p in parts]) for f in ("vectors", "image", "y", "x",
                                                                                      "view")))


def layer_grids(model: LoadedModel, ref: LayerRef, images: torch.Tensor, runtime: Runtime | None = None, *,
                batch_size: int = ANALYSIS_BATCH) -> torch.Tensor:
    """``(N, C, H, W)``: the layer's activations (float32) of ``images`` ``(N, C, H, W)`` in [0, 1]."""
    parts = []
    with torch.no_grad(), Forward(model, [ref], runtime) as forward:
        for start in range(0, images.shape[0], batch_size):
            batch = model.preprocessing.normalize(images[start:start + batch_size].to(model.device))
            parts.append(forward(batch)[ref].float().cpu())
    return torch.cat(parts)


def _positions(grids: torch.Tensor, image: torch.Tensor, view: torch.Tensor, per_image: int | None,
               generator: torch.Generator) -> ActivationVectors:
    """Every position of ``grids`` ``(n, C, H, W)``, or ``per_image`` of each drawn by norm."""
    n, channels, height, width = grids.shape
    flat = grids.permute(0, 2, 3, 1).reshape(n, height * width, channels)
    if per_image is None or per_image >= height * width:
        chosen = torch.arange(height * width).expand(n, -1)
    else:
        chosen = torch.multinomial(flat.norm(dim=2) + 1e-12, per_image, generator=generator)
    vectors = flat.gather(1, chosen.unsqueeze(-1).expand(-1, -1, channels))
    return ActivationVectors(vectors.reshape(-1, channels), image.unsqueeze(1).expand_as(chosen).reshape(-1),
                             (chosen // width).reshape(-1), (chosen % width).reshape(-1),
                             view.unsqueeze(1).expand_as(chosen).reshape(-1))


def collect_vectors(model: LoadedModel, ref: LayerRef, images: torch.Tensor, *, flips: bool = True, views: int = 0,
                    per_image: int | None = None, seed: int = 0, runtime: Runtime | None = None,
                    batch_size: int = ANALYSIS_BATCH) -> ActivationVectors:
    """The activation vectors of ``ref`` over ``images`` ``(N, C, H, W)`` in [0, 1], with ``flips`` their mirror
    images, and ``views`` random views of each (resized crops of 60-100 % of the area, mirrored half the time,
    brightness within 10 %: more vectors, and more varied, for a dictionary learnt from few images): every
    position, or ``per_image`` positions of each drawn without replacement with probability proportional to the
    vector's norm (Bozoukov et al. 2025). Seeded."""
    generator = torch.Generator().manual_seed(seed)
    every = torch.arange(images.shape[0])
    found = []
    for view, flipped in enumerate((False, True) if flips else (False,)):
        grids = layer_grids(model, ref, images.flip(-1) if flipped else images, runtime, batch_size=batch_size)
        found.append(_positions(grids, every, torch.full_like(every, view), per_image, generator))
    for start in range(0, images.shape[0] if views > 0 else 0, _CHUNK):
        chunk = images[start:start + _CHUNK]
        made = torch.cat([augmentations(image, views, generator) for image in chunk])
        grids = layer_grids(model, ref, made, runtime, batch_size=batch_size)
        index = every[start:start + len(chunk)].repeat_interleave(views)
        found.append(_positions(grids, index, 2 + torch.arange(views).repeat(len(chunk)), per_image, generator))
    return ActivationVectors.joined(found)
