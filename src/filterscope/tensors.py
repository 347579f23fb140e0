"""Tensor ⇄ PIL conversion (a leaf module: it imports nothing of filterscope).

Images inside filterscope are float tensors in [0, 1], ``(3,H,W)`` or ``(B,3,H,W)``; PIL images are
8-bit RGB.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["to_pil", "to_tensor"]


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """``(3,H,W)`` float in [0, 1] → 8-bit RGB PIL image (rounded, clipped)."""
    array = (pixels.detach().cpu().permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(array, mode="RGB")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image (converted to RGB) → ``(1,3,H,W)`` float in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()
