"""Image files: reading photos and arrays, writing PNGs with metadata.

This module owns image formats, not tensors (:mod:`filterscope.tensors` converts them) nor render results
(:mod:`filterscope.results` names, describes and saves them); every write goes through
:func:`filterscope.files.atomic_write`, so an interrupted run never leaves a half-written file. PNGs carry
their provenance as text chunks.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .arguments import checked
from .errors import ImageError
from .files import atomic_write, regular_file

__all__ = ["save_png", "encode_png", "read_png_metadata", "load_image", "load_array", "save_array", "ARRAY_SUFFIXES"]


ARRAY_SUFFIXES = (".npy", ".tif", ".tiff")
"""Files read as arrays of any channel count: NumPy ``.npy`` and (multi-page) TIFF."""

def encode_png(image: Image.Image, metadata: Mapping[str, str] | None = None) -> bytes:
    """``image`` as PNG bytes with ``metadata`` as text chunks (what :func:`save_png` writes)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(key, str(value))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()

def save_png(image: Image.Image, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``image`` as PNG with ``metadata`` as text chunks, atomically. Returns the path."""
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(key, str(value))
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))
    return path

@checked
def read_png_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The text chunks of a PNG written by :func:`save_png`.

    Raises:
        ImageError: the file is missing, not a regular file, not an image, or its metadata cannot be read
            (truncated, or a text chunk that inflates past Pillow's safety limit).
    """
    path = regular_file(path)
    try:
        with Image.open(path) as image:
            return {str(k): str(v) for k, v in getattr(image, "text", {}).items()}
    except UnidentifiedImageError:
        raise ImageError(f"Not an image file (or an unsupported format): {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"Cannot read the metadata of {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}") \
            from None

@checked
def load_image(path: str | os.PathLike[str], *, min_side: int | None = None) -> Image.Image:
    """Read an image as RGB, with its EXIF orientation applied.

    Grayscale, palette, CMYK and RGBA images are converted to RGB (alpha over white). With
    ``min_side``, a large JPEG is decoded directly at a reduced scale whose shorter side is still at
    least ``min_side`` (Pillow's draft mode), so a 12000 x 8000 photo never needs its full-size pixels.
    ``image.info["original_size"]`` keeps the full (oriented) size, which region coordinates refer to.

    Raises:
        ImageError: the file is missing, not an image, too large, or truncated/corrupt.
    """
    path = regular_file(path)
    try:
        with warnings.catch_warnings():
            # Large photos are expected here; Pillow still refuses absurd sizes with DecompressionBombError.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as file:
                raw_w, raw_h = file.size
                if min_side and file.format == "JPEG" and min(raw_w, raw_h) > 2 * min_side:
                    factor = min_side / min(raw_w, raw_h)
                    file.draft("RGB", (math.ceil(raw_w * factor), math.ceil(raw_h * factor)))
                file.load()
                rotated = file.getexif().get(0x0112, 1) in (5, 6, 7, 8)
                image = ImageOps.exif_transpose(file)
                if image.mode.startswith("I"):  # 16/32-bit integers: scale to 8 bits instead of clipping at 255
                    values = np.asarray(image, dtype=np.float64)
                    top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) <= 65535 else values.max()
                    image = Image.fromarray((values / top * 255).round().clip(0, 255).astype(np.uint8), mode="L")
                if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                    rgba = image.convert("RGBA")
                    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(background, rgba).convert("RGB")
                else:
                    image = image.convert("RGB")
    except UnidentifiedImageError:
        raise ImageError(f"Not an image file (or an unsupported format): {path}") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"Image too large to read safely: {path} ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"Cannot read image {path}: it is truncated or corrupt ({exc})") from None
    image.info["original_size"] = (raw_h, raw_w) if rotated else (raw_w, raw_h)
    return image

def load_array(path: str | os.PathLike[str], channels: int | None = None) -> np.ndarray:
    """An image of any channel count as a ``(C,H,W)`` float32 array in [0, 1].

    ``.npy`` (``(C,H,W)``, ``(H,W,C)`` or ``(H,W)``) is read without pickles; ``.tif``/``.tiff`` with
    tifffile (one page per channel, or one page of ``(H,W,C)``). Integer data is scaled by its type's
    range (uint8 by 255, uint16 by 65535); float data is taken as it is and must lie in [0, 1].
    ``channels``, when given, picks the layout (``(H,W,C)`` vs ``(C,H,W)``) and is checked.

    Raises:
        ImageError: a missing, unreadable or malformed file, or values outside [0, 1].
    """
    path = regular_file(path, "Array")
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            import tifffile  # installed with scikit-image

            array = tifffile.imread(path)
    except (OSError, ValueError, EOFError) as exc:
        raise ImageError(f"Cannot read array {path}: {exc}") from None
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ImageError(f"Array {path} has shape {array.shape}; expected (channels, height, width)")
    if channels is not None and array.shape[0] != channels and array.shape[-1] == channels:
        array = np.moveaxis(array, -1, 0)
    if channels is not None and array.shape[0] != channels:
        raise ImageError(f"Array {path} has shape {array.shape}: the model takes {channels} channels")
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ImageError(f"Array {path} holds floats outside [0, 1] (or NaN): scale it to [0, 1] first")
    else:
        raise ImageError(f"Array {path} has dtype {array.dtype}; expected integers or floats")
    return np.ascontiguousarray(array)

def save_array(array: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write ``array`` as ``.npy`` atomically. Returns the path."""
    path = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)

    atomic_write(path, write)
    return path
