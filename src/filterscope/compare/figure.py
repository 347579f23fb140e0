"""A diff's figure: the CKA heat map with each layer's best partner, and each matched layer pair's correlations
against the null's threshold (matplotlib)."""

from __future__ import annotations

from collections.abc import Callable

from matplotlib.figure import Figure
from PIL import Image

from ..plots import image_grid
from .crosscoder import ConceptSplit
from .diff import ModelDiff

__all__ = ["diff_figure", "exclusive_figure"]


def _short(name: str) -> str:
    return name.replace("_blocks.", "b")


def diff_figure(report: ModelDiff) -> Figure:
    """Left: CKA of every layer of A (rows) with every layer of B (columns), a dot on each row's best partner.
    Right: each matched pair's one-to-one correlations, best first, with the shuffled-image threshold."""
    figure = Figure(figsize=(12, 5), layout="constrained")
    heat, curves = figure.subplots(1, 2, width_ratios=(1.2, 1))
    image = heat.imshow(report.cka, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    figure.colorbar(image, ax=heat, label="linear CKA" + (" (debiased)" if report.debiased else ""))
    for i, row in enumerate(report.cka):
        j = max(range(len(row)), key=row.__getitem__)
        heat.plot([j], [i], "o", color="white", markersize=4)
    heat.set_yticks(range(len(report.layers_a)), [_short(n) for n in report.layers_a], fontsize=7)
    heat.set_xticks(range(len(report.layers_b)), [_short(n) for n in report.layers_b], fontsize=7, rotation=90)
    heat.set(ylabel=f"A: {report.model_a.split(' (')[0]}", xlabel=f"B: {report.model_b.split(' (')[0]}",
             title=f"layer CKA over {report.images} images (dot: best partner)")
    for match in report.matches:
        line, = curves.plot([m.correlation for m in match.matches],
                            label=f"A {match.layer_a} ↔ B {match.layer_b}: {match.share:.0%} matched, "
                                  f"{len(match.buddies)} buddies")
        curves.axhline(match.threshold, linestyle=":", color=line.get_color())
    curves.set(xlabel="matched pair (best first)", ylabel="correlation over images and positions",
               title="unit matching (dotted: the null's threshold)", ylim=(-0.05, 1.02))
    if report.matches:
        curves.legend(fontsize=7, loc="upper right")
    return figure


def exclusive_figure(split: ConceptSplit, image: Callable[[int], Image.Image], *, latents: int = 8,
                     per_latent: int = 6) -> Figure | None:
    """What each network sees that the other does not: up to ``latents`` exclusive concepts (B's first, the most
    used first), a row each of their top images (``image(index)`` loads the diff's image ``index``); ``None``
    when there are none."""
    rows = [("B", lt) for lt in split.exclusive("b")] + [("A", lt) for lt in split.exclusive("a")]
    rows = rows[:latents]
    if not rows:
        return None
    images, titles = [], []
    for side, latent in rows:
        found = [image(i).convert("RGB") for i in split.images_of(latent.index)[:per_latent]]
        blank = Image.new("RGB", found[0].size if found else (64, 64), "white")
        images += found + [blank] * (per_latent - len(found))
        titles += [f"{side} only: concept {latent.index}\n(on {latent.usage:.1%} of positions)"] + \
            [""] * (per_latent - 1)
    return image_grid(images, titles, columns=per_latent, panel_inches=1.6,
                      suptitle=f"Concepts of one network only: {split.layer_a} (A) and {split.layer_b} (B)")
