"""Tensor ⇄ PIL conversion (a leaf module: it imports nothing of filterscope).

Images inside filterscope are float tensors in [0, 1], ``(C,H,W)`` or ``(B,C,H,W)``; PIL images are
8-bit grayscale (``L``) or RGB.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .arguments import checked

__all__ = ["to_pil", "to_tensor"]


@checked
def to_pil(pixels: torch.Tensor, display: Sequence[int] | None = None) -> Image.Image:
    """``(C,H,W)`` float in [0, 1] → an 8-bit PIL image (rounded, clipped): grayscale for 1 channel, RGB
    for 3, and for any other count a false-color RGB preview of the channels ``display`` names (red,
    green, blue; default the first three, or the first one as gray)."""
    if display is None:
        display = {1: (0,), 3: (0, 1, 2)}.get(pixels.shape[0], tuple(range(min(3, pixels.shape[0]))))
    if len(display) == 2:
        display = (*display, display[-1])
    shown = pixels.detach().cpu()[list(display)]
    array = (shown.permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0], mode="L")
    return Image.fromarray(array, mode="RGB")


@checked
def to_tensor(image: Image.Image, mode: str = "RGB") -> torch.Tensor:
    """A PIL image (converted to ``mode``: RGB, or L for grayscale) → ``(1,C,H,W)`` float in [0, 1]."""
    array = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()
