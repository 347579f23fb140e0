"""The paper's Table 1: the top k filters of an image and of occluded variants of it (section 4.3).

Regions are filled with one of :data:`FILLS`; each row says how many of the original's top k survive,
how the original top k's mean activation changed, and the rank correlation of all filters.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from ..arguments import checked
from ..display import html_table
from ..errors import RegionError
from ..layers import LayerRef
from ..runtime.core import Runtime
from ..zoo.model import LoadedModel, coerce_model
from .activations import checked_layer, layer_means, strongest_first
from .inputs import AnalysisImage, prepare_image
from .regions import Box

__all__ = ["FILLS", "fill_image", "occlude", "OcclusionRow", "OcclusionStudy", "occlusion_study"]

FILLS = ("neutral", "gray", "black", "mean", "blur", "noise")
"""``neutral``: the model's normalization mean (its training data's average, what the network reads as
0; the default); ``gray``: 0.5; ``black``: 0; ``mean``: the image's own mean color; ``blur``: a strong
Gaussian blur of the image; ``noise``: seeded uniform noise."""


def _gaussian_blur(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=pixels.dtype)
    kernel = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).to(pixels.device)
    batch = pixels.reshape(-1, 1, *pixels.shape[-2:])
    padded = F.pad(batch, (radius, radius, 0, 0), mode="replicate")
    batch = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    padded = F.pad(batch, (0, 0, radius, radius), mode="replicate")
    batch = F.conv2d(padded, kernel.view(1, 1, -1, 1))
    return batch.reshape(pixels.shape)


def fill_image(pixels: torch.Tensor, fill: str, seed: int = 0,
               neutral: tuple[float, ...] | None = None) -> torch.Tensor:
    """What occluded pixels are replaced with: ``(C,H,W)`` for one of :data:`FILLS`; ``neutral`` is the
    model's normalization mean (one value per channel)."""
    if fill == "neutral":
        if neutral is None:
            raise RegionError("fill 'neutral' needs the model's normalization mean")
        return torch.tensor(neutral, dtype=pixels.dtype).view(-1, 1, 1).expand_as(pixels).clone()
    if fill == "gray":
        return torch.full_like(pixels, 0.5)
    if fill == "black":
        return torch.zeros_like(pixels)
    if fill == "mean":
        return pixels.mean(dim=(-2, -1), keepdim=True).expand_as(pixels).clone()
    if fill == "blur":
        return _gaussian_blur(pixels, sigma=min(pixels.shape[-2:]) / 20)
    if fill == "noise":
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(pixels.shape, generator=generator).to(pixels)
    raise RegionError(f"Unknown fill {fill!r}: use one of {', '.join(FILLS)}")


def occlude(image: AnalysisImage, boxes: Sequence[Box], *, fill: str = "gray", seed: int = 0,
            name: str = "region", neutral: tuple[float, ...] | None = None) -> tuple[torch.Tensor, float]:
    """``image`` with ``boxes`` (original-image coordinates) filled; also the occluded share of the input."""
    replacement = fill_image(image.pixels, fill, seed, neutral)
    mask = torch.zeros(image.pixels.shape[-2:], dtype=torch.bool)
    for box in boxes:
        x0, y0, x1, y1 = image.placement.box_to_input(box.pixels(image.original_size, name))
        mask[y0:y1, x0:x1] = True
    return torch.where(mask, replacement, image.pixels), float(mask.float().mean())


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denominator if denominator else 1.0


@dataclass(frozen=True)
class OcclusionRow:
    """One line of the paper's Table 1.

    Attributes:
        name: The variant ("original", or its region names).
        top: Its k most active filters, strongest first.
        common: How many of them are in the original's top k.
        mean_change: Relative change of the mean activation of the original's top k, e.g. -0.12 = -12%.
        rank_correlation: Spearman correlation of all filters' mean activations with the original's.
        occluded_share: Share of the network's input that the regions cover (0 when they fall outside the crop).
    """

    name: str
    top: list[int]
    common: int
    mean_change: float
    rank_correlation: float
    occluded_share: float


@dataclass
class OcclusionStudy:
    """The occlusion table (paper Table 1) with the images it was computed on."""

    model_name: str
    layer: str
    image_name: str
    k: int
    fill: str
    rows: list[OcclusionRow]
    images: list[torch.Tensor] = field(repr=False)
    means: torch.Tensor = field(repr=False)

    def table(self) -> list[list[str]]:
        header = ["image", f"top {self.k} filters", "# common", "mean change", "rank corr.", "occluded"]
        body = [[r.name, "[" + ", ".join(map(str, r.top)) + "]", f"{r.common}/{self.k}",
                 f"{100 * r.mean_change:+.1f}%", f"{r.rank_correlation:.3f}", f"{100 * r.occluded_share:.0f}%"]
                for r in self.rows]
        return [header, *body]

    def _repr_html_(self) -> str:
        """The table: what a notebook shows for a study (:mod:`filterscope.display`)."""
        header, *body = self.table()
        return html_table(f"{self.model_name} {self.layer}: {self.image_name}, occluded with {self.fill}", header, body)

    def markdown(self) -> str:
        header, *body = self.table()
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        table = self.table()
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table) + "\n"

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["image", "top", "common", "k", "mean_change", "rank_correlation", "occluded_share"])
        for r in self.rows:
            writer.writerow([r.name, " ".join(map(str, r.top)), r.common, self.k, f"{r.mean_change:.6f}",
                             f"{r.rank_correlation:.6f}", f"{r.occluded_share:.6f}"])
        return buffer.getvalue()


@checked
def occlusion_study(model: LoadedModel, image: str | os.PathLike[str] | Image.Image | AnalysisImage,
                    layer: str | LayerRef, variants: Mapping[str, Sequence[Box]], *, k: int = 10,
                    fill: str = "neutral", seed: int = 0, fit: str = "crop",
                    runtime: Runtime | None = None) -> OcclusionStudy:
    """The paper's Table 1: top-k filters of the original and of each occluded variant.

    Args:
        model: The model.
        image: Path, PIL image or :class:`AnalysisImage`.
        layer: Any accepted layer form.
        variants: Name → boxes occluded together (original-image coordinates, see :class:`Box`).
        k: Filters per row.
        fill: One of :data:`FILLS`.
        seed: Seeds the noise fill.
        fit: How the image is fitted to the input (see :meth:`Preprocessing.place`).
        runtime: Precision and memory format (:mod:`filterscope.runtime`).

    Raises:
        RegionError: a malformed, empty or out-of-image region, or an unknown fill.
    """
    model = coerce_model(model)
    ref, _ = checked_layer(model, layer, k)
    if fill not in FILLS:
        raise RegionError(f"Unknown fill {fill!r}: use one of {', '.join(FILLS)}")
    item = image if isinstance(image, AnalysisImage) else prepare_image(model, image, fit=fit)
    names, images, shares = ["original"], [item.pixels], [0.0]
    for name, boxes in variants.items():
        pixels, share = occlude(item, boxes, fill=fill, seed=seed, name=name, neutral=model.preprocessing.mean)
        names.append(name)
        images.append(pixels)
        shares.append(share)
    means = layer_means(model, ref, torch.stack(images), runtime=runtime)
    base = means[0]
    base_top = strongest_first(base)[:k]
    base_level = float(base[base_top].mean())
    rows = []
    for name, values, share in zip(names, means, shares):
        top = strongest_first(values)[:k]
        common = len(set(top.tolist()) & set(base_top.tolist()))
        change = (float(values[base_top].mean()) - base_level) / abs(base_level) if base_level else 0.0
        rows.append(OcclusionRow(name, top.tolist(), common, change, _spearman(base, values), share))
    return OcclusionStudy(model.name, str(ref), item.name, k, fill, rows, images, means)
