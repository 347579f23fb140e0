"""Matplotlib figures. Functions return a ``Figure`` (never shown); :func:`save_figure` writes one.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``), so no pyplot state or
GUI backend is involved and they work headless.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from .files import atomic_write
from .tensors import to_pil

__all__ = ["image_grid", "activation_bars", "heatmap_overlays", "top_filters_panel", "occlusion_sheet",
           "sensitivity_figure", "atlas_sheet", "circuit_figure", "dictionary_figure", "save_figure"]


def _show(ax: Any, image: Image.Image) -> None:
    """``imshow`` that shows grayscale images in gray (not in a color map)."""
    if image.mode == "L":
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image)


def image_grid(images: Sequence[Image.Image], titles: Sequence[str], *, suptitle: str | None = None,
               columns: int | None = None, panel_inches: float = 2.6) -> Figure:
    """Images side by side, each titled (e.g. with its filter index), in a grid of ``columns``."""
    if len(images) != len(titles):
        raise ValueError("one title per image")
    count = max(1, len(images))
    columns = columns or min(count, 6)
    rows = math.ceil(count / columns)
    title_lines = max((t.count("\n") + 1 for t in titles), default=1)
    height = rows * (panel_inches + 0.2 * title_lines) + (0.4 if suptitle else 0.1)
    fig = Figure(figsize=(panel_inches * columns, height), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, image, title in zip(axes.flat, images, titles):
        _show(ax, image)
        ax.set_title(title, fontsize=10)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix), atomically."""
    path = Path(path)
    suffix = path.suffix.lstrip(".") or "png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=suffix, dpi=dpi))
    return path


def activation_bars(means: torch.Tensor, top: Sequence[int], *, title: str,
                    values_label: str = "mean activation") -> Figure:
    """The paper's Figure 5: every filter's mean activation (clipped at 0), the top k marked."""
    values = means.clamp(min=0).numpy()
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax = fig.subplots()
    index = np.arange(len(values))
    ax.bar(index, values, width=1.0, color="#9aa7b8", linewidth=0)
    top = list(top)
    ax.bar(top, values[top], width=max(1.0, len(values) / 250), color="#d1495b", linewidth=0,
           label=f"top {len(top)}")
    for rank, f in enumerate(top[:10]):
        ax.annotate(str(f), (f, values[f]), textcoords="offset points", xytext=(0, 3 + 9 * (rank % 2)),
                    ha="center", fontsize=8, color="#8b1e2d")
    ax.set_xlim(-1, len(values))
    ax.set_ylim(0, max(float(values.max()), 1e-6) * 1.15)
    ax.set_xlabel("filter")
    ax.set_ylabel(f"{values_label} (clipped at 0)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", frameon=False)
    return fig


def heatmap_overlays(image: Image.Image, maps: torch.Tensor, titles: Sequence[str], *, suptitle: str | None = None,
                     columns: int | None = None, panel_inches: float = 2.8, label: str = "activation drop",
                     signed: bool = True) -> Figure:
    """The image, then one panel per map over it (a map of any grid, stretched over the image): red positive,
    blue negative (``signed``), or a heat scale from 0 (``signed=False``); ``label`` names the colour bar."""
    count = len(titles) + 1
    columns = columns or min(count, 4)
    rows = math.ceil(count / columns)
    fig = Figure(figsize=(panel_inches * columns, rows * (panel_inches + 0.45) + (0.4 if suptitle else 0)),
                 layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    _show(axes.flat[0], image)
    axes.flat[0].set_title("image", fontsize=10)
    for ax, heat, title in zip(axes.flat[1:], maps, titles):
        limit = max(float(heat.abs().max()), 1e-12)
        _show(ax, image)
        shown = ax.imshow(heat.numpy(), cmap="RdBu_r" if signed else "inferno", vmin=-limit if signed else 0,
                          vmax=limit, alpha=0.6, extent=(-0.5, image.size[0] - 0.5, image.size[1] - 0.5, -0.5))
        ax.set_title(title, fontsize=10)
        fig.colorbar(shown, ax=ax, shrink=0.75, label=label)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig


def top_filters_panel(image: Image.Image, image_name: str, visualizations: Sequence[Image.Image],
                      filters: Sequence[int], values: Sequence[float], *, suptitle: str) -> Figure:
    """The paper's Figure 4: the image, then each top filter's visualization titled with its mean activation."""
    titles = [image_name] + [f"filter {f}\nmean act. {v:.2f}" for f, v in zip(filters, values)]
    return image_grid([image, *visualizations], titles, columns=min(6, len(titles)), suptitle=suptitle)


def occlusion_sheet(images: Sequence[torch.Tensor], names: Sequence[str], *, suptitle: str) -> Figure:
    """The paper's Figure 6: the original and each occluded variant, labelled with its name."""
    return image_grid([to_pil(p) for p in images], list(names), columns=min(5, len(names)), suptitle=suptitle)


class _Picture(Protocol):
    def pil(self) -> Image.Image: ...


class _SensitivityMaps(Protocol):
    """What :func:`sensitivity_figure` reads of :class:`~filterscope.analysis.SensitivityMaps` (this module sits
    below the analysis package, so it names the fields it needs rather than the class)."""

    @property
    def filters(self) -> Sequence[int]: ...
    @property
    def baseline(self) -> torch.Tensor: ...
    @property
    def image(self) -> _Picture: ...
    @property
    def maps(self) -> torch.Tensor: ...
    @property
    def patch(self) -> int: ...
    @property
    def stride(self) -> int: ...
    @property
    def fill(self) -> str: ...


def sensitivity_figure(maps: _SensitivityMaps, *, model_name: str) -> Figure:
    """Heatmap overlays of :class:`~filterscope.analysis.SensitivityMaps`, one panel per filter."""
    titles = [f"filter {f} (act. {float(b):.2f})" for f, b in zip(maps.filters, maps.baseline)]
    return heatmap_overlays(maps.image.pil(), maps.maps, titles,
                            suptitle=f"{model_name}: where occluding a {maps.patch} px patch lowers each filter "
                                     f"(stride {maps.stride}, {maps.fill} fill)")


def atlas_sheet(units: Sequence[tuple[str, Image.Image | None, Sequence[Image.Image]]], *, suptitle: str,
                exemplars: int = 4, units_per_row: int = 2, panel_inches: float = 1.3) -> Figure:
    """An atlas page: for each unit its optimized image (titled) next to its top dataset exemplars (crops
    around where the unit fires most), ``units_per_row`` units side by side."""
    columns = units_per_row * (1 + exemplars)
    rows = max(1, math.ceil(len(units) / units_per_row))
    fig = Figure(figsize=(panel_inches * columns + 0.2 * units_per_row, rows * (panel_inches + 0.25) + 0.45),
                 layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for index, (title, image, crops) in enumerate(units):
        row, start = divmod(index, units_per_row)
        start *= 1 + exemplars
        if image is not None:
            _show(axes[row, start], image)
        axes[row, start].set_title(title, fontsize=8)
        for k, crop in enumerate(list(crops)[:exemplars]):
            _show(axes[row, start + 1 + k], crop)
            if k == 0:
                axes[row, start + 1].set_title("top exemplars →", fontsize=7, loc="left")
    fig.suptitle(suptitle, fontsize=10)
    return fig


WeightPanel = tuple[str, Image.Image | None, np.ndarray]
"""One input of a circuit figure: its title, its optimized image (or ``None``) and its ``(kh, kw)`` kernel."""


def circuit_figure(unit_title: str, unit_image: Image.Image | None, excite: Sequence[WeightPanel],
                   inhibit: Sequence[WeightPanel], *, suptitle: str, panel_inches: float = 1.25) -> Figure:
    """A circuit in the style of "Visualizing Weights" (Distill): the unit's image on top, then each input
    unit's optimized image beside its ``kh x kw`` expanded weights, red where it excites and blue where it
    inhibits (one colour scale for the whole figure, so kernels compare); excitatory inputs on the left,
    inhibitory ones on the right."""
    rows = max(len(excite), len(inhibit), 1)
    kernels = [k for _, _, k in [*excite, *inhibit]]
    scale = max((float(np.abs(k).max()) for k in kernels if k.size), default=1.0) or 1.0
    fig = Figure(figsize=(4 * panel_inches + 0.6, (rows + 1.4) * (panel_inches + 0.22) + 0.3), layout="constrained")
    grid = fig.add_gridspec(rows + 1, 4, height_ratios=[1.4] + [1] * rows)
    top = fig.add_subplot(grid[0, 1:3])
    top.set_axis_off()
    if unit_image is not None:
        _show(top, unit_image)
    top.set_title(unit_title, fontsize=9)
    mappable = None
    for column, (label, panels) in enumerate((("excites", excite), ("inhibits", inhibit))):
        for row in range(rows):
            image_ax = fig.add_subplot(grid[row + 1, 2 * column])
            kernel_ax = fig.add_subplot(grid[row + 1, 2 * column + 1])
            image_ax.set_axis_off()
            kernel_ax.set_xticks([])
            kernel_ax.set_yticks([])
            if row >= len(panels):
                kernel_ax.set_axis_off()
                continue
            title, image, kernel = panels[row]
            if image is not None:
                _show(image_ax, image)
            image_ax.set_title(title, fontsize=7)
            mappable = kernel_ax.imshow(kernel, cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
            if row == 0:
                kernel_ax.set_title(label, fontsize=7, loc="right")
    if mappable is not None:
        fig.colorbar(mappable, ax=fig.axes[1:], shrink=0.4, label="expanded weight")
    fig.suptitle(suptitle, fontsize=9)
    return fig


DictionaryRow = tuple[tuple[int, int], Sequence[tuple[str, Image.Image | None]]]
"""A position ``(y, x)`` of a semantic dictionary and its top units as ``(title, optimized image or None)``."""


def dictionary_figure(image: Image.Image, grid: tuple[int, int], rows: Sequence[DictionaryRow], *, suptitle: str,
                      panel_inches: float = 1.3) -> Figure:
    """A semantic dictionary: the image with each chosen position of the layer's ``grid`` numbered, then a row
    per position: its top units (titled, with their optimized images when given)."""
    columns = 1 + max((len(units) for _, units in rows), default=1)
    fig = Figure(figsize=(panel_inches * (columns + 2), max(len(rows), 2) * (panel_inches + 0.25) + 0.5),
                 layout="constrained")
    grid_spec = fig.add_gridspec(max(len(rows), 1), columns + 2)
    main = fig.add_subplot(grid_spec[:, :3])
    main.set_axis_off()
    _show(main, image)
    sy, sx = image.size[1] / grid[0], image.size[0] / grid[1]
    for number, ((y, x), units) in enumerate(rows, start=1):
        main.text((x + 0.5) * sx, (y + 0.5) * sy, str(number), color="white", fontsize=9, ha="center", va="center",
                  bbox={"boxstyle": "circle", "facecolor": "#e5484d", "edgecolor": "white", "pad": 0.2})
        for column, (title, picture) in enumerate(units):
            ax = fig.add_subplot(grid_spec[number - 1, 3 + column])
            ax.set_axis_off()
            if picture is not None:
                _show(ax, picture)
            ax.set_title(f"{number}: {title}" if column == 0 else title, fontsize=7)
    fig.suptitle(suptitle, fontsize=10)
    return fig
