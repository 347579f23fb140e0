"""The activation atlas as a picture: each cell's icon at its place on the grid, with its label."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["map_figure", "short_label"]


def short_label(name: str | None, length: int = 14) -> str:
    """A class name short enough for a cell: its first synonym, cut to ``length`` characters."""
    if not name:
        return ""
    first = name.split(",")[0].strip()
    return first if len(first) <= length else first[:length - 1] + "…"


def map_figure(grid: int, cells: Sequence[tuple[int, int, int, str | None, Path | None]], *, cell: int = 72,
               density: bool = False, labels: bool = True) -> Image.Image:
    """``cells``: ``(row, col, count, label, icon file)``; each icon fills its cell (or, with ``density``, a
    share of it growing with the square root of its count), labelled along its bottom edge."""
    canvas = Image.new("RGB", (grid * cell, grid * cell), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(8, cell // 7))
    most = max((c[2] for c in cells), default=1)
    for row, col, count, label, icon in cells:
        x0, y0 = col * cell, row * cell
        side = cell if not density else max(int(cell * (count / most) ** 0.5), cell // 3)
        left, top = x0 + (cell - side) // 2, y0 + (cell - side) // 2
        if icon is not None and icon.exists():
            with Image.open(icon) as image:
                canvas.paste(image.convert("RGB").resize((side, side), Image.Resampling.LANCZOS), (left, top))
        else:
            draw.rectangle((left, top, left + side - 1, top + side - 1), outline=(200, 200, 200))
        text = short_label(label) if labels else ""
        if text:
            box = draw.textbbox((0, 0), text, font=font)
            height = box[3] - box[1] + 3
            draw.rectangle((x0, y0 + cell - height, x0 + cell - 1, y0 + cell - 1), fill=(0, 0, 0))
            draw.text((x0 + 2, y0 + cell - height), text, fill=(255, 255, 255), font=font)
    return canvas
