"""Matplotlib figures. Functions return a ``Figure`` (never shown); :func:`save_figure` writes one.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``), so no pyplot state or
GUI backend is involved and they work headless.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image

from .images import _atomic_write

__all__ = ["image_grid", "save_figure"]


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
        ax.imshow(image)
        ax.set_title(title, fontsize=10)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix), atomically."""
    path = Path(path)
    suffix = path.suffix.lstrip(".") or "png"
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format=suffix, dpi=dpi))
    return path
