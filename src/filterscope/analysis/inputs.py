"""Images in the network's view: loading, preprocessing, folders, augmented views.

An :class:`AnalysisImage` is one image as the network sees it (``(3,S,S)`` in [0, 1]) with the
:class:`~filterscope.zoo.preprocessing.Placement` that maps original-image pixels (which region
coordinates refer to) into it. Decoding is split in a Pillow half (:func:`decode_image`, safe to run in
a background thread) and a torch half (:func:`decoded`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ImageError
from ..images import load_image
from ..tensors import to_pil, to_tensor
from ..zoo.preprocessing import Placement
from ..zoo.registry import LoadedModel

__all__ = ["IMAGE_SUFFIXES", "AnalysisImage", "prepare_image", "decode_image", "decoded", "collect_images",
           "augmentations"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class AnalysisImage:
    """One image in the network's view.

    Attributes:
        name: A label (the file name, or what the caller gave).
        pixels: ``(3,S,S)`` float in [0, 1], the network's input before normalization.
        placement: Maps original-image pixels to input pixels.
        original_size: ``(width, height)`` of the original image, which region coordinates refer to.
    """

    name: str
    pixels: torch.Tensor
    placement: Placement
    original_size: tuple[int, int]

    def pil(self) -> Image.Image:
        return to_pil(self.pixels)


def prepare_image(model: LoadedModel, image: str | os.PathLike[str] | Image.Image, *, fit: str = "crop",
                  name: str | None = None) -> AnalysisImage:
    """Load (if a path) and preprocess one image for ``model``; see :class:`AnalysisImage`."""
    return decoded(*decode_image(model, image, fit, name))


def decode_image(model: LoadedModel, image: str | os.PathLike[str] | Image.Image, fit: str,
            name: str | None) -> tuple[str, Image.Image, Placement, tuple[int, int]]:
    """The Pillow half of :func:`prepare_image` (it releases the GIL, so it can run in a background
    thread without competing with the network's threads): label, input-sized view, placement, size."""
    if isinstance(image, Image.Image):
        pil, label = image, name or "image"
    else:
        pil, label = load_image(image, min_side=model.preprocessing.resize_size), name or Path(image).name
    original = tuple(pil.info.get("original_size", pil.size))
    view, placement = model.preprocessing.place_image(pil, fit, original_size=original)
    return label, view, placement, original


def decoded(label: str, view: Image.Image, placement: Placement, original: tuple[int, int]) -> AnalysisImage:
    """The torch half of :func:`prepare_image`."""
    return AnalysisImage(label, to_tensor(view)[0], placement, original)


def collect_images(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files from a list of paths, folders expanded to their images (sorted)."""
    files: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in folder {item}")
            files.extend(found)
        else:
            files.append(item)
    if not files:
        raise ImageError("No image given")
    return files


def augmentations(pixels: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random views of ``(3,S,S)``: resized crops of 60-100% area, flips, brightness ±10%."""
    size = pixels.shape[-1]
    views = []
    for _ in range(count):
        area = 0.6 + 0.4 * float(torch.rand((), generator=generator))
        side = max(8, int(size * math.sqrt(area)))
        y, x = (int(torch.randint(0, size - side + 1, (), generator=generator)) for _ in range(2))
        view = F.interpolate(pixels[None, :, y:y + side, x:x + side], size=(size, size), mode="bilinear",
                             align_corners=False, antialias=True)[0]
        if float(torch.rand((), generator=generator)) < 0.5:
            view = view.flip(-1)
        view = view * (0.9 + 0.2 * float(torch.rand((), generator=generator)))
        views.append(view.clamp(0, 1))
    return torch.stack(views)
