"""A layer's activation vectors over images: every position of every image (or some, drawn by their norm), and
the images mirrored, with where each vector came from."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layers import LayerRef
from ..runtime.core import ANALYSIS_BATCH, Forward, Runtime
from ..zoo.model import LoadedModel

__all__ = ["ActivationVectors", "collect_vectors", "layer_grids"]


@dataclass(frozen=True)
class ActivationVectors:
    """Vectors ``(N, C)`` of a layer and, for each, its image's index, its position ``(y, x)`` in the layer's
    grid and whether the image was mirrored."""

    vectors: torch.Tensor
    image: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor
    flipped: torch.Tensor

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def of_images(self, keep: torch.Tensor) -> ActivationVectors:
        """The vectors of the images whose indices are in ``keep``."""
        mask = torch.isin(self.image, keep)
        return ActivationVectors(self.vectors[mask], self.image[mask], self.y[mask], self.x[mask], self.flipped[mask])


def layer_grids(model: LoadedModel, ref: LayerRef, images: torch.Tensor, runtime: Runtime | None = None, *,
                batch_size: int = ANALYSIS_BATCH) -> torch.Tensor:
    """``(N, C, H, W)``: the layer's activations (float32) of ``images`` ``(N, C, H, W)`` in [0, 1]."""
    parts = []
    with torch.no_grad(), Forward(model, [ref], runtime) as forward:
        for start in range(0, images.shape[0], batch_size):
            batch = model.preprocessing.normalize(images[start:start + batch_size].to(model.device))
            parts.append(forward(batch)[ref].float().cpu())
    return torch.cat(parts)


def collect_vectors(model: LoadedModel, ref: LayerRef, images: torch.Tensor, *, flips: bool = True,
                    per_image: int | None = None, seed: int = 0, runtime: Runtime | None = None,
                    batch_size: int = ANALYSIS_BATCH) -> ActivationVectors:
    """The activation vectors of ``ref`` over ``images`` ``(N, C, H, W)`` in [0, 1] (and, with ``flips``, their
    mirror images): every position, or ``per_image`` positions of each image drawn without replacement with
    probability proportional to the vector's norm (Bozoukov et al. 2025), seeded."""
    generator = torch.Generator().manual_seed(seed)
    found = []
    for flipped in (False, True) if flips else (False,):
        grids = layer_grids(model, ref, images.flip(-1) if flipped else images, runtime, batch_size=batch_size)
        n, channels, height, width = grids.shape
        flat = grids.permute(0, 2, 3, 1).reshape(n, height * width, channels)
        if per_image is None or per_image >= height * width:
            chosen = torch.arange(height * width).expand(n, -1)
        else:
            weights = flat.norm(dim=2) + 1e-12
            chosen = torch.multinomial(weights, per_image, generator=generator)
        vectors = flat.gather(1, chosen.unsqueeze(-1).expand(-1, -1, channels))
        image = torch.arange(n).unsqueeze(1).expand_as(chosen)
        found.append(ActivationVectors(vectors.reshape(-1, channels), image.reshape(-1), (chosen // width).reshape(-1),
                                       (chosen % width).reshape(-1), torch.full((chosen.numel(),), flipped)))
    return ActivationVectors(*(torch.cat([getattr(v, f) for v in found]) for f in ("vectors", "image", "y", "x",
                                                                                   "flipped")))
