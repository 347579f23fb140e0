"""Paired pictures of a diff: matched units rendered in both networks side by side, the best matched and the least
(what the two share, and where they differ), each with its correlation; and shared concepts of a crosscoder, each
rendered in both networks along that network's own part of the concept's decoder direction."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from matplotlib.figure import Figure

from ..engine.objectives import Direction
from ..engine.recipes import Recipe, get_recipe
from ..engine.render import render, visualize_filters
from ..tensors import to_pil
from ..zoo.model import LoadedModel
from .crosscoder import ConceptSplit
from .matching import LayerMatch, Match

__all__ = ["PairedRenders", "paired_renders", "concept_renders", "pairs_figure"]


@dataclass(frozen=True)
class PairedRenders:
    """Pictures ``(n, C, H, W)`` of A (``a``) and of B (``b``), pair by pair, each titled (``labels_a``,
    ``labels_b``), of the layer pair they belong to; ``what`` says what the pairs are."""

    layer_a: str
    layer_b: str
    labels_a: tuple[str, ...]
    labels_b: tuple[str, ...]
    a: torch.Tensor
    b: torch.Tensor
    what: str


def _recipe(recipe: str | Recipe) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else get_recipe(recipe)


def chosen_matches(match: LayerMatch, count: int) -> list[Match]:
    """The ``count`` best matched pairs and the ``count`` least matched (each once)."""
    return list(dict.fromkeys(match.matches[:count] + match.matches[-count:]))


def paired_renders(a: LoadedModel, b: LoadedModel, match: LayerMatch, *, count: int = 4,
                   recipe: str | Recipe = "filterscope", seed: int = 0) -> PairedRenders:
    """The ``count`` best matched pairs of ``match`` and its ``count`` least matched, each unit rendered in its own
    network with ``recipe`` (the same seed for both)."""
    chosen, recipe = chosen_matches(match, count), _recipe(recipe)
    first = visualize_filters(a, match.layer_a, [m.a for m in chosen], recipe=recipe, seed=seed)
    second = visualize_filters(b, match.layer_b, [m.b for m in chosen], recipe=recipe, seed=seed)
    return PairedRenders(match.layer_a, match.layer_b, tuple(f"A unit {m.a}\nr = {m.correlation:.2f}" for m in chosen),
                         tuple(f"B unit {m.b}" for m in chosen), first.images, second.images,
                         "the best matched units, then the least")


def concept_renders(a: LoadedModel, b: LoadedModel, split: ConceptSplit, *, count: int = 4,
                    recipe: str | Recipe = "filterscope", seed: int = 0) -> PairedRenders | None:
    """The ``count`` most used shared concepts of ``split`` (those whose decoder directions it kept), each rendered
    in A along its A part and in B along its B part (``None`` without any)."""
    kept = split.directions[:count]
    if not kept:
        return None
    recipe = _recipe(recipe)
    first = render(a, [Direction(split.layer_a, part_a) for _, part_a, _ in kept], recipe=recipe, seed=seed)
    second = render(b, [Direction(split.layer_b, part_b) for _, _, part_b in kept], recipe=recipe, seed=seed)
    return PairedRenders(split.layer_a, split.layer_b, tuple(f"A: concept {j}" for j, _, _ in kept),
                         tuple(f"B: concept {j}" for j, _, _ in kept), first.images, second.images,
                         "shared concepts, each along its own network's part of the direction")


def pairs_figure(pairs: PairedRenders) -> Figure:
    """Two rows: each picture of A above its pair in B."""
    count = len(pairs.labels_a)
    figure = Figure(figsize=(1.9 * count, 4.4), layout="constrained")
    axes = figure.subplots(2, count, squeeze=False)
    for i in range(count):
        for row, (images, label) in enumerate(((pairs.a, pairs.labels_a[i]), (pairs.b, pairs.labels_b[i]))):
            ax = axes[row][i]
            ax.imshow(to_pil(images[i]))
            ax.set_axis_off()
            ax.set_title(label, fontsize=8)
    figure.suptitle(f"{pairs.layer_a} (top) and {pairs.layer_b} (below): {pairs.what}", fontsize=9)
    return figure
