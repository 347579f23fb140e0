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
from typing import TypeVar

import torch
import torch.nn.functional as F
from PIL import Image

from ..arguments import checked
from ..errors import ImageError
from ..files import regular_file
from ..images import ARRAY_SUFFIXES, load_array, load_image
from ..tensors import to_pil, to_tensor
from ..zoo.model import LoadedModel, coerce_model
from ..zoo.preprocessing import Placement

__all__ = ["IMAGE_SUFFIXES", "ImageSource", "Images", "image_list", "AnalysisImage", "prepare_image", "decode_image",
           "decoded", "collect_images", "augmentations"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".npy")

T = TypeVar("T")

ImageSource = str | os.PathLike[str] | Image.Image
"""One image: a file's path or a PIL image."""

Images = ImageSource | Sequence[ImageSource]
"""One image or many: every public function that takes images takes either."""


def image_list(images: ImageSource | Sequence[T]) -> list[ImageSource | T]:
    """``images`` as a list: one image (a path or a PIL image) is a list of one."""
    return [images] if isinstance(images, str | os.PathLike | Image.Image) else list(images)


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


@checked
def prepare_image(model: LoadedModel, image: str | os.PathLike[str] | Image.Image, *, fit: str = "crop",
                  name: str | None = None) -> AnalysisImage:
    """Load (if a path) and preprocess one image for ``model``; see :class:`AnalysisImage`."""
    return decoded(*decode_image(coerce_model(model), image, fit, name))


def decode_image(model: LoadedModel, image: str | os.PathLike[str] | Image.Image | torch.Tensor, fit: str,
                 name: str | None) -> tuple[str, Image.Image | torch.Tensor, Placement, tuple[int, int]]:
    """The Pillow half of :func:`prepare_image` (it releases the GIL, so it can run in a background
    thread without competing with the network's threads): label, input-sized view, placement, size.

    Arrays (``.npy``, and TIFF for models that take neither 1 nor 3 channels) are read with
    :func:`~filterscope.images.load_array` and placed with torch; the view is then a tensor.
    """
    prep = model.preprocessing
    if isinstance(image, torch.Tensor):  # (C, H, W) in [0, 1], e.g. a row of fs.reference_crops: placed as arrays are
        view, placement = prep.place_array(image.detach().float().cpu(), fit)
        return name or "image", view, placement, (int(image.shape[-1]), int(image.shape[-2]))
    if isinstance(image, Image.Image):
        pil, label = image, name or "image"
    else:
        path = Path(image)
        label = name or path.name
        if path.suffix.lower() == ".npy" or (prep.image_mode is None and path.suffix.lower() in ARRAY_SUFFIXES):
            array = torch.from_numpy(load_array(path, prep.channels))
            view, placement = prep.place_array(array, fit)
            return label, view, placement, (int(array.shape[-1]), int(array.shape[-2]))
        pil = load_image(path, min_side=min(prep.resize_size) if isinstance(prep.resize_size, tuple)
                         else prep.resize_size)
    original = tuple(pil.info.get("original_size", pil.size))
    view_image, placement = prep.place_image(pil, fit, original_size=original)
    return label, view_image, placement, original


def decoded(label: str, view: Image.Image | torch.Tensor, placement: Placement,
            original: tuple[int, int]) -> AnalysisImage:
    """The torch half of :func:`prepare_image`."""
    pixels = view if isinstance(view, torch.Tensor) else to_tensor(view, view.mode)[0]
    return AnalysisImage(label, pixels, placement, original)


@checked
def collect_images(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files from one path or a list of them, folders expanded to their images (sorted)."""
    files: list[Path] = []
    for item in map(Path, [paths] if isinstance(paths, str | os.PathLike) else paths):  # one path or many
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in folder {item}")
            files.extend(found)
        else:
            files.append(regular_file(item))
    if not files:
        raise ImageError("No image given")
    return files


def augmentations(pixels: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random views of ``(C,H,W)``: resized crops of 60-100% area, flips, brightness ±10%."""
    height, width = pixels.shape[-2:]
    views = []
    for _ in range(count):
        area = 0.6 + 0.4 * float(torch.rand((), generator=generator))
        side_h = min(height, max(8, int(height * math.sqrt(area))))
        side_w = min(width, max(8, int(width * math.sqrt(area))))
        y = int(torch.randint(0, height - side_h + 1, (), generator=generator))
        x = int(torch.randint(0, width - side_w + 1, (), generator=generator))
        view = F.interpolate(pixels[None, :, y:y + side_h, x:x + side_w], size=(height, width), mode="bilinear",
                             align_corners=False, antialias=True)[0]
        if float(torch.rand((), generator=generator)) < 0.5:
            view = view.flip(-1)
        view = view * (0.9 + 0.2 * float(torch.rand((), generator=generator)))
        views.append(view.clamp(0, 1))
    return torch.stack(views)
