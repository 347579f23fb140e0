"""How results show themselves in a notebook: Jupyter's ``_repr_png_`` and ``_repr_html_`` hooks.

IPython calls ``_repr_png_`` (PNG bytes) or ``_repr_html_`` (an HTML fragment) on the last value of a cell;
results implement them with these two helpers, so that a render is a strip of its images and a ranking or an
occlusion study a table, in Jupyter, VS Code and anything else that follows IPython's display protocol. This
module imports nothing of filterscope.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

from PIL import Image

__all__ = ["png_strip", "html_table", "html_png", "STRIP_SIDE", "STRIP_MAX"]

STRIP_SIDE = 160
"""Each image of a strip fits in this many pixels."""
STRIP_MAX = 16
"""A strip shows at most this many images."""


def png_strip(images: Sequence[Image.Image], side: int = STRIP_SIDE) -> bytes:
    """PNG bytes of the first :data:`STRIP_MAX` ``images`` side by side, each fitted into ``side`` px, 4 px apart."""
    shown = [image.convert("RGB") for image in images[:STRIP_MAX]]  # copies: thumbnail() works in place
    for image in shown:
        if max(image.size) > side:
            image.thumbnail((side, side), Image.Resampling.LANCZOS)
    width = sum(image.width for image in shown) + 4 * max(len(shown) - 1, 0)
    height = max((image.height for image in shown), default=1)
    strip = Image.new("RGB", (max(width, 1), height), "white")
    x = 0
    for image in shown:
        strip.paste(image, (x, 0))
        x += image.width + 4
    buffer = io.BytesIO()
    strip.save(buffer, "PNG")
    return buffer.getvalue()


def html_table(caption: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table (every cell escaped) with a caption."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return (f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def html_png(png: bytes) -> str:
    """An ``<img>`` carrying ``png`` inline (a data URL), for HTML that shows pictures."""
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
