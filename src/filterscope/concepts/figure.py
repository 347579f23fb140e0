"""The concepts' figure: the most used concepts (not the dense ones), one row each, with the images where each fires
most and where in them (its activation over the image), and the channel the concept writes to most."""

from __future__ import annotations

import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from ..layers import LayerRef
from ..tensors import to_pil
from ..zoo.model import LoadedModel
from .concepts import ConceptDictionary
from .quality import DENSE
from .vectors import layer_grids

__all__ = ["concept_maps", "concept_figure"]


def concept_maps(model: LoadedModel, ref: LayerRef, found: ConceptDictionary, images: torch.Tensor,
                 concepts: list[int]) -> torch.Tensor:
    """``(N, len(concepts), H, W)``: where each of ``concepts`` fires in each image (the layer's grid)."""
    return found.grid_codes(layer_grids(model, ref, images))[:, concepts]


def concept_figure(model: LoadedModel, ref: LayerRef, found: ConceptDictionary, images: torch.Tensor, *,
                   concepts: int = 8, per_concept: int = 4, dense: float = DENSE) -> Figure:
    """The ``concepts`` most used concepts that are not dense (firing on at most ``dense`` of the positions: the
    dense ones fire nearly everywhere, a background more than a concept), each with the ``per_concept`` images
    (of ``images``, in [0, 1]) where it fires most, its activation over them in heat colours (transparent where
    it is 0)."""
    chosen = [c for c in found.by_usage() if found.usage[c] <= dense][:concepts] or found.by_usage()[:concepts]
    maps = concept_maps(model, ref, found, images, chosen)
    shown = min(per_concept, images.shape[0])
    figure = Figure(figsize=(1.9 * shown + 0.4, 2.0 * len(chosen) + 0.5), layout="constrained")
    axes = figure.subplots(len(chosen), shown, squeeze=False)
    for row, concept in enumerate(chosen):
        peaks = maps[:, row].flatten(1).amax(1)
        strongest = int(found.atoms[concept].abs().argmax())
        for column, index in enumerate(peaks.topk(shown).indices.tolist()):
            ax = axes[row, column]
            image = to_pil(images[index])
            ax.imshow(image)
            heat = (maps[index, row] / max(float(maps[index, row].max()), 1e-12)).numpy()
            colours = colormaps["inferno"](heat)
            colours[..., 3] = 0.7 * heat  # opaque where the concept fires most, clear where it does not
            ax.imshow(colours, interpolation="bilinear", extent=(-0.5, image.size[0] - 0.5, image.size[1] - 0.5, -0.5))
            ax.set_axis_off()
            if column == 0:
                ax.set_title(f"concept {concept} ({found.usage[concept]:.1%} of positions; mostly channel "
                             f"{strongest})", fontsize=8, loc="left")
    figure.suptitle(f"{found.model} {found.layer}: {len(chosen)} most used of {found.settings.atoms} concepts\n"
                    f"(not dense: on at most {dense:.0%} of positions), where each fires most", fontsize=10)
    return figure
