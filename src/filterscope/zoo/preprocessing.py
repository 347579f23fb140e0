"""How a model wants its input: size, resize/crop and normalization.

A :class:`Preprocessing` travels with every loaded model, so nothing downstream hard-codes ImageNet
statistics, three channels or a square input. Images handled by filterscope are ``(B,C,H,W)`` float
tensors in [0, 1] until the last moment, where :meth:`Preprocessing.normalize` turns them into what the
network was trained on; ``C`` is the length of ``mean``/``std`` and ``(H, W)`` is :attr:`input_shape`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..errors import InvalidOptionError

__all__ = ["Preprocessing", "Placement", "FITS", "IMAGENET_MEAN", "IMAGENET_STD", "REFERENCE_SIDE"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "nearest-exact": Image.Resampling.NEAREST,  # torchvision's name for Pillow's nearest
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
"""The resampling filters by the names torchvision's ``InterpolationMode`` values use."""


def _interpolation(value: object) -> str:
    """``"bilinear"``, ``"BILINEAR"`` or torchvision's ``InterpolationMode.BILINEAR`` (its ``value``) → ``bilinear``."""
    name = getattr(value, "value", value)
    if not isinstance(name, str) or name.lower() not in _RESAMPLE:
        raise InvalidOptionError(f"interpolation must be one of {', '.join(_RESAMPLE)} (or torchvision's "
                                 f"InterpolationMode), not {value!r}")
    return name.lower()


REFERENCE_SIDE = 224
"""The input side the paper's numbers refer to: recipes scale their pixel sizes by ``side / 224``."""


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``224`` → ``(224, 224)``; ``(64, 256)`` stays; anything else is an error."""
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 \
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise InvalidOptionError(f"{name} must be a whole number of pixels or (height, width), not {value!r}")
    if min(pair) < 1:
        raise InvalidOptionError(f"{name} must be at least 1 px (got {value!r})")
    return pair


@dataclass(frozen=True)
class Preprocessing:
    """Evaluation preprocessing of a model.

    Attributes:
        input_size: The input the network sees at evaluation: a side (square), or ``(height, width)``.
        resize_size: Before the center crop, the image is resized so that the input's shorter side
            becomes this (the crop keeps ``input_size``'s aspect ratio); or, as torchvision's ``Resize`` takes
            it, ``(height, width)``: resized to exactly that, then center-cropped to the input.
        mean: Per-channel mean subtracted from the [0, 1] image; its length is the number of input
            channels (1 for grayscale, 3 for RGB, any other for multispectral data).
        std: Per-channel standard deviation the centred image is divided by (same length as ``mean``).
        interpolation: Resampling used for the resize: nearest, bilinear, bicubic, lanczos, box or hamming
            (torchvision's ``InterpolationMode`` names and values are accepted).
    """

    input_size: int | tuple[int, int] = 224
    resize_size: int | tuple[int, int] = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        shape = _pair(self.input_size, "input_size")
        if isinstance(self.input_size, Sequence):  # frozen: keep a tuple whatever sequence was given
            object.__setattr__(self, "input_size", shape)
        object.__setattr__(self, "interpolation", _interpolation(self.interpolation))
        resize = _pair(self.resize_size, "resize_size")
        if isinstance(self.resize_size, Sequence):
            object.__setattr__(self, "resize_size", resize)
            if resize[0] < shape[0] or resize[1] < shape[1]:
                raise InvalidOptionError(f"resize_size {resize} must be at least the input {shape} on each side "
                                         "(the resized image is center-cropped to the input)")
        elif self.resize_size < min(shape):
            raise InvalidOptionError(f"resize_size ({self.resize_size}) must be at least the input's shorter side "
                                     f"({min(shape)})")
        try:
            mean, std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
        except (TypeError, ValueError):
            raise InvalidOptionError(f"mean and std must be sequences of numbers (got {self.mean!r}, "
                                     f"{self.std!r})") from None
        if not mean or len(mean) != len(std):
            raise InvalidOptionError(f"mean and std need one value per input channel, as many of each (got "
                                     f"{len(mean)} and {len(std)})")
        if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
            raise InvalidOptionError(f"mean must be finite and std finite and positive (got {self.mean}, {self.std})")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def to_dict(self) -> dict[str, object]:
        """Its fields as JSON data (what :func:`~filterscope.zoo.sources.read_preprocessing` reads)."""
        size = self.input_size
        resize = self.resize_size
        return {"input_size": list(size) if isinstance(size, tuple) else size,
                "resize_size": list(resize) if isinstance(resize, tuple) else resize,
                "mean": list(self.mean), "std": list(self.std), "interpolation": self.interpolation}

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> Preprocessing:
        """The preprocessing :meth:`to_dict` wrote."""
        size, resize = values.get("input_size"), values.get("resize_size", 256)
        return cls(**{**values, "input_size": tuple(size) if isinstance(size, list) else size,  # type: ignore[arg-type]
                      "resize_size": tuple(resize) if isinstance(resize, list) else resize})

    @property
    def channels(self) -> int:
        """Input channels: 1 (grayscale), 3 (RGB) or any other number."""
        return len(self.mean)

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the network's input."""
        return _pair(self.input_size, "input_size")

    @property
    def image_mode(self) -> str | None:
        """The PIL mode of this model's images: ``L`` for 1 channel, ``RGB`` for 3; None for other counts
        (photos cannot hold them: such models read arrays)."""
        return {1: "L", 3: "RGB"}.get(self.channels)

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        channels = self.channels
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, channels, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, channels, 1, 1)
        return mean, std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,C,H,W)`` in [0, 1] → the network's input space."""
        mean, std = self._stats(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize` (no clipping)."""
        mean, std = self._stats(x)
        return x * std + mean

    def prepare(self, image: Image.Image, fit: str = "crop") -> torch.Tensor:
        """The network's view of ``image``: ``(1,C,H,W)`` float in [0, 1], ``(H, W)`` = :attr:`input_shape`.

        ``fit`` is ``crop`` (the evaluation preprocessing: resize so that the input's shorter side becomes
        ``resize_size``, center-crop), ``squash`` (resize the whole image to the input) or ``pad`` (fit
        the whole image inside, pad with the normalization mean).
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
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous(), placement

    def place_image(self, image: Image.Image, fit: str = "crop",
                    original_size: tuple[int, int] | None = None) -> tuple[Image.Image, Placement]:
        """:meth:`place` with Pillow only: the input-sized image in :attr:`image_mode` (no torch work, so it
        can run in a background thread without competing with the network's threads)."""
        if fit not in FITS:
            raise InvalidOptionError(f"fit must be one of {', '.join(FITS)}, not {fit!r}")
        mode = self.image_mode
        if mode is None:
            raise InvalidOptionError(f"This model takes {self.channels} input channels, which a photo cannot hold: "
                                     "give arrays (.npy, or .tif with one page per channel)")
        image = image.convert(mode)
        w, h = image.size
        ow, oh = original_size or (w, h)
        height, width = self.input_shape
        resample = _RESAMPLE[self.interpolation]
        if fit == "squash":
            out = image.resize((width, height), resample, reducing_gap=3.0)
            placement = Placement(width / ow, height / oh, 0.0, 0.0, width, height)
        elif fit == "pad":
            scale = min(width / w, height / h)
            new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
            fill = tuple(round(m * 255) for m in self.mean)
            out = Image.new(mode, (width, height), fill if len(fill) > 1 else fill[0])
            left, top = (width - new_w) // 2, (height - new_h) // 2
            out.paste(image.resize((new_w, new_h), resample, reducing_gap=3.0), (left, top))
            placement = Placement(new_w / ow, new_h / oh, float(left), float(top), width, height)
        else:
            new_w, new_h = self._resized(w, h)
            if (new_w, new_h) != (w, h):
                # reducing_gap keeps very large images fast and light (a box pre-shrink, then the filter).
                image = image.resize((new_w, new_h), resample, reducing_gap=3.0)
            left, top = (new_w - width) // 2, (new_h - height) // 2
            out = image.crop((left, top, left + width, top + height))
            placement = Placement(new_w / ow, new_h / oh, float(-left), float(-top), width, height)
        return out, placement

    def _resized(self, w: int, h: int) -> tuple[int, int]:
        """The ``(width, height)`` an image of ``w`` x ``h`` is resized to before the center crop: covering the
        input with its shorter side at ``resize_size``, or exactly ``resize_size`` when that is ``(h, w)``."""
        if isinstance(self.resize_size, tuple):
            return self.resize_size[1], self.resize_size[0]
        height, width = self.input_shape
        ratio = self.resize_size / min(height, width)
        cover_w, cover_h = round(width * ratio), round(height * ratio)
        scale = max(cover_w / w, cover_h / h)
        return max(cover_w, round(w * scale)), max(cover_h, round(h * scale))

    def place_array(self, pixels: torch.Tensor, fit: str = "crop") -> tuple[torch.Tensor, Placement]:
        """:meth:`place` for an array image ``(C,H,W)`` in [0, 1] with this model's channel count (multispectral
        data, which Pillow cannot hold): resized with antialiased bilinear interpolation."""
        if fit not in FITS:
            raise InvalidOptionError(f"fit must be one of {', '.join(FITS)}, not {fit!r}")
        if pixels.dim() != 3 or pixels.shape[0] != self.channels:
            raise InvalidOptionError(f"This model takes {self.channels}-channel images; the array has shape "
                                     f"{tuple(pixels.shape)} (expected ({self.channels}, height, width))")
        h, w = pixels.shape[-2:]
        height, width = self.input_shape

        def resized(new_h: int, new_w: int) -> torch.Tensor:
            if (new_h, new_w) == (h, w):
                return pixels
            return torch.nn.functional.interpolate(pixels[None], size=(new_h, new_w), mode="bilinear",
                                                   align_corners=False, antialias=True)[0].clamp(0, 1)

        if fit == "squash":
            return resized(height, width), Placement(width / w, height / h, 0.0, 0.0, width, height)
        if fit == "pad":
            scale = min(width / w, height / h)
            new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
            out = torch.tensor(self.mean, dtype=pixels.dtype).view(-1, 1, 1).repeat(1, height, width)
            left, top = (width - new_w) // 2, (height - new_h) // 2
            out[:, top:top + new_h, left:left + new_w] = resized(new_h, new_w)
            return out, Placement(new_w / w, new_h / h, float(left), float(top), width, height)
        new_w, new_h = self._resized(w, h)
        left, top = (new_w - width) // 2, (new_h - height) // 2
        out = resized(new_h, new_w)[:, top:top + height, left:left + width]
        return out.contiguous(), Placement(new_w / w, new_h / h, float(-left), float(-top), width, height)


FITS = ("crop", "squash", "pad")


@dataclass(frozen=True)
class Placement:
    """Where an image lands in the network's ``width`` x ``height`` input: ``input = image * scale + offset``."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    width: int
    height: int

    def box_to_input(self, box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
        """An image-pixel box ``(x0, y0, x1, y1)`` in input pixels, clipped to the input (may be empty)."""
        x0, y0, x1, y1 = box

        def clip(v: float, limit: int) -> int:
            return int(min(max(round(v), 0), limit))

        return (clip(x0 * self.scale_x + self.offset_x, self.width),
                clip(y0 * self.scale_y + self.offset_y, self.height),
                clip(x1 * self.scale_x + self.offset_x, self.width),
                clip(y1 * self.scale_y + self.offset_y, self.height))
