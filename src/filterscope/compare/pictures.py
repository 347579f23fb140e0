"""Paired pictures of a diff: matched units rendered in both networks side by side, the best matched and the least
(what the two share, and where they differ), each with its correlation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure

from ..engine.recipes import Recipe, get_recipe
from ..engine.render import visualize_filters
from ..tensors import to_pil
from ..zoo.model import LoadedModel
from .matching import LayerMatch, Match

__all__ = ["PairedRenders", "paired_renders", "pairs_figure"]


@dataclass(frozen=True)
class PairedRenders:
    """The renders ``(n, C, H, W)`` of A's units (``a``) and of their matches in B (``b``), one per match in
    ``matches``, with the layer pair they belong to."""

    layer_a: str
    layer_b: str
    matches: tuple[Match, ...]
    a: torch.Tensor
    b: torch.Tensor


def paired_renders(a: LoadedModel, b: LoadedModel, match: LayerMatch, *, count: int = 4,
                   recipe: str | Recipe = "filterscope", seed: int = 0) -> PairedRenders:
    """The ``count`` best matched pairs of ``match`` and its ``count`` least matched, each unit rendered in its own
    network with ``recipe`` (the same seed for both)."""
    chosen = list(dict.fromkeys(match.matches[:count] + match.matches[-count:] if len(match.matches) > count
                                else match.matches))
    recipe = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    first = visualize_filters(a, match.layer_a, [m.a for m in chosen], recipe=recipe, seed=seed)
    second = visualize_filters(b, match.layer_b, [m.b for m in chosen], recipe=recipe, seed=seed)
    return PairedRenders(match.layer_a, match.layer_b, tuple(chosen), first.images, second.images)


def pairs_figure(pairs: PairedRenders, names: Sequence[str] = ("A", "B")) -> Figure:
    """Two rows: each chosen unit of A above its match in B, titled with the units and their correlation."""
    count = len(pairs.matches)
    figure = Figure(figsize=(1.9 * count, 4.4), layout="constrained")
    axes = figure.subplots(2, count, squeeze=False)
    for i, m in enumerate(pairs.matches):
        for row, (images, unit, name) in enumerate(((pairs.a, m.a, names[0]), (pairs.b, m.b, names[1]))):
            ax = axes[row][i]
            ax.imshow(to_pil(images[i]))
            ax.set_axis_off()
            ax.set_title(f"{name} unit {unit}" + (f"\nr = {m.correlation:.2f}" if row == 0 else ""), fontsize=8)
    figure.suptitle(f"{pairs.layer_a} (top) and {pairs.layer_b} (below): the best matched units, then the least",
                    fontsize=9)
    return figure
