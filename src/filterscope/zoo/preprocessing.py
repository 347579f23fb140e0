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

__all__ = ["Preprocessing", "IMAGENET_MEAN", "IMAGENET_STD"]

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
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}, not {self.interpolation!r}")
        if self.resize_size < self.input_size:
            raise ValueError("resize_size must be at least input_size")

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

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """Resize the shorter side, center-crop to ``input_size``: ``(1,3,S,S)`` float in [0, 1]."""
        image = image.convert("RGB")
        w, h = image.size
        scale = self.resize_size / min(w, h)
        new_w, new_h = max(self.resize_size, round(w * scale)), max(self.resize_size, round(h * scale))
        if min(w, h) != self.resize_size:
            # reducing_gap keeps very large images fast and light (a box pre-shrink, then the filter).
            image = image.resize((new_w, new_h), _RESAMPLE[self.interpolation], reducing_gap=3.0)
        left = (new_w - self.input_size) // 2
        top = (new_h - self.input_size) // 2
        image = image.crop((left, top, left + self.input_size, top + self.input_size))
        array = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()
