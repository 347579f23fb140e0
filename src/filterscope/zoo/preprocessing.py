"""How a model wants its input: size, resize/crop and normalization.

A :class:`Preprocessing` travels with every loaded model, so nothing downstream hard-codes ImageNet
statistics. Images handled by filterscope are ``(B,3,H,W)`` float tensors in [0, 1] until the last
moment, where :meth:`Preprocessing.normalize` turns them into what the network was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..errors import InvalidOptionError

__all__ = ["Preprocessing", "Placement", "FITS", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Preprocessing:
    """Evaluation preprocessing of a model.

    Attributes:
        input_size: Side of the square the network sees at evaluation.
        resize_size: The shorter image side is resized to this before the center crop.
        mean: Per-channel mean subtracted from the [0, 1] image.
        std: Per-channel standard deviation the centred image is divided by.
        interpolation: Resampling used for the resize: nearest, bilinear, bicubic or lanczos.
    """

    input_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in _RESAMPLE:
            raise InvalidOptionError(f"interpolation must be one of {sorted(_RESAMPLE)}, not {self.interpolation!r}")
        if self.resize_size < self.input_size:
            raise InvalidOptionError(f"resize_size ({self.resize_size}) must be at least input_size "
                                     f"({self.input_size})")

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return mean, std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W)`` in [0, 1] → the network's input space."""
        mean, std = self._stats(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize` (no clipping)."""
        mean, std = self._stats(x)
        return x * std + mean

    def prepare(self, image: Image.Image, fit: str = "crop") -> torch.Tensor:
        """The network's view of ``image``: ``(1,3,S,S)`` float in [0, 1], S = ``input_size``.

        ``fit`` is ``crop`` (the evaluation preprocessing: resize the shorter side to ``resize_size``,
        center-crop), ``squash`` (resize the whole image to S x S) or ``pad`` (fit the longer side,
        pad with the normalization mean).
        """
        return self.place(image, fit)[0]

    def place(self, image: Image.Image, fit: str = "crop",
              original_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, Placement]:
        """:meth:`prepare`, plus the :class:`Placement` mapping image pixels to input pixels.

        ``original_size`` is the size the caller's coordinates refer to, when ``image`` was decoded
        smaller (JPEG draft mode); by default ``image.size``.
        """
        out, placement = self.place_image(image, fit, original_size)
        array = np.asarray(out, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous(), placement

    def place_image(self, image: Image.Image, fit: str = "crop",
                    original_size: tuple[int, int] | None = None) -> tuple[Image.Image, Placement]:
        """:meth:`place` with Pillow only: the S x S RGB input image (no torch work, so it can run in a
        background thread without competing with the network's threads)."""
        if fit not in FITS:
            raise InvalidOptionError(f"fit must be one of {', '.join(FITS)}, not {fit!r}")
        image = image.convert("RGB")
        w, h = image.size
        ow, oh = original_size or (w, h)
        s, resample = self.input_size, _RESAMPLE[self.interpolation]
        if fit == "squash":
            out = image.resize((s, s), resample, reducing_gap=3.0)
            placement = Placement(s / ow, s / oh, 0.0, 0.0, s)
        elif fit == "pad":
            scale = s / max(w, h)
            new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
            fill = tuple(round(m * 255) for m in self.mean)
            out = Image.new("RGB", (s, s), fill)
            left, top = (s - new_w) // 2, (s - new_h) // 2
            out.paste(image.resize((new_w, new_h), resample, reducing_gap=3.0), (left, top))
            placement = Placement(new_w / ow, new_h / oh, float(left), float(top), s)
        else:
            scale = self.resize_size / min(w, h)
            new_w, new_h = max(self.resize_size, round(w * scale)), max(self.resize_size, round(h * scale))
            if (new_w, new_h) != (w, h):
                # reducing_gap keeps very large images fast and light (a box pre-shrink, then the filter).
                image = image.resize((new_w, new_h), resample, reducing_gap=3.0)
            left, top = (new_w - s) // 2, (new_h - s) // 2
            out = image.crop((left, top, left + s, top + s))
            placement = Placement(new_w / ow, new_h / oh, float(-left), float(-top), s)
        return out, placement


FITS = ("crop", "squash", "pad")


@dataclass(frozen=True)
class Placement:
    """Where an image lands in the network's ``size`` x ``size`` input: ``input = image * scale + offset``."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    size: int

    def box_to_input(self, box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
        """An image-pixel box ``(x0, y0, x1, y1)`` in input pixels, clipped to the input (may be empty)."""
        x0, y0, x1, y1 = box
        def clip(v: float) -> int:
            return int(min(max(round(v), 0), self.size))
        return (clip(x0 * self.scale_x + self.offset_x), clip(y0 * self.scale_y + self.offset_y),
                clip(x1 * self.scale_x + self.offset_x), clip(y1 * self.scale_y + self.offset_y))
