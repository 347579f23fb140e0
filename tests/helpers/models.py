"""Tiny CNNs with hand-set weights, whose right answers are known exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from filterscope import Preprocessing, wrap_model

# Identity normalization: the network sees the [0, 1] image as it is.
PLAIN = Preprocessing(input_size=32, resize_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class Tripwire(nn.Module):
    """Identity that counts how often it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


class ColorNet(nn.Module):
    """conv1 channels 0/1/2 see red/green/blue (1x1 kernels), channel 3 sees "not red".

    ``act`` (a ReLU) is called twice: after conv1 (call 0) and after conv2 (call 1), like torchvision's
    ``BasicBlock.relu``. ``after`` runs after the second call and counts its calls; ``fc`` gives 5 logits.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.after = Tripwire()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)
        with torch.no_grad():
            self.conv1.weight.zero_()
            self.conv1.bias.zero_()
            for c in range(3):
                self.conv1.weight[c, c] = 1.0
            self.conv1.weight[3, 0] = -1.0
            self.conv1.bias[3] = 1.0
            generator = torch.Generator().manual_seed(0)
            self.conv2.weight.copy_(torch.randn(self.conv2.weight.shape, generator=generator) * 0.3)
            self.conv2.bias.zero_()
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=generator))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.after(x)
        return self.fc(self.pool(x).flatten(1))


def color_net():
    """A :class:`ColorNet` wrapped as a LoadedModel with identity normalization and 32 px input."""
    return wrap_model(ColorNet(), name="colornet", preprocessing=PLAIN)


class SmallConvNet(nn.Module):
    """A randomly initialized (seeded) 3-conv network, for optimization properties."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def small_net(seed: int = 0):
    return wrap_model(SmallConvNet(seed), name="smallnet",
                      preprocessing=Preprocessing(input_size=32, resize_size=32))


class Constant(nn.Module):
    """Channel 0 is a constant 1 whatever the image: nothing can make it rise."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[1, 0] = 1.0  # channel 1 follows the red channel: it rises
            self.conv.bias.copy_(torch.tensor([1.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def constant():
    return wrap_model(Constant(), name="constant", preprocessing=PLAIN)


class Fooling(nn.Module):
    """A network whose visualizations lie, after Geirhos et al. 2024's construction, on 32 px RGB images.

    ``conv1`` has eight colour channels (offset by 0.5) and eight high-frequency ones (both signs of two
    Laplacians and two gradients of the gray image, less 0.05: smooth images give none).
    ``gate`` is a soft switch on the local Laplacian: ``softplus(50 (|lap| - 0.2)) / 50``, at most 1e-4 on smooth
    natural images (whose Laplacian stays below 0.11), but with a gradient everywhere, so that an optimizer finds
    the high-frequency pattern that opens it. ``conv3`` has four units:

    0. *normal*: red minus green;
    1. *fooling*: red minus green capped at 0.2 (a redness detector on natural images: they rank as by unit 0
       below the cap), plus 100 times the gate: once the cap is reached only the gate rises, so its
       visualization shows a high-frequency pattern, not redness;
    2. *silent*: 100 times the gate alone: below 1e-2 on natural images;
    3. *normal*: blue minus red.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, padding_mode="replicate")
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 4, 1)
        self.act2 = nn.ReLU()
        self.gate = nn.Softplus(beta=50)
        self.conv3 = nn.Conv2d(5, 4, 1)
        lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]) / 3  # of the gray image
        cross = torch.tensor([[1.0, 0.0, 1.0], [0.0, -4.0, 0.0], [1.0, 0.0, 1.0]]) / 3
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 12
        colour = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0], [0, 0.5, 0.5], [0.5, 0, 0.5],
                               [0.6, 0.3, 0.1], [0.1, 0.3, 0.6]])
        with torch.no_grad():
            for conv in (self.conv1, self.conv2, self.conv3):
                conv.weight.zero_()
                conv.bias.zero_()
            w = self.conv1.weight
            w[:8, :, 1, 1] = colour  # eight colour channels, offset above the high-frequency ones
            self.conv1.bias[:8] = 0.5
            self.conv1.bias[8:] = -0.05  # a dead zone: smooth images have no high frequencies at all after act1
            for c in range(3):  # eight high-frequency channels (both signs of four filters)
                for i, kernel in enumerate((lap, cross, sobel, sobel.T)):
                    w[8 + 2 * i, c], w[9 + 2 * i, c] = kernel, -kernel
            w2, b2 = self.conv2.weight, self.conv2.bias
            w2[0, 0, 0, 0], w2[0, 1, 0, 0] = 1.0, -1.0  # red - green
            w2[1, 0, 0, 0], w2[1, 1, 0, 0], b2[1] = 1.0, -1.0, -0.2  # red - green - 0.2: the cap
            w2[2, 8:, 0, 0], b2[2] = 1.0, -0.6  # all high frequencies (their absolute values) - 0.6: the gate's input
            w2[3, 2, 0, 0], w2[3, 0, 0, 0] = 1.0, -1.0  # blue - red
            w3 = self.conv3.weight
            w3[0, 0, 0, 0] = 1.0
            w3[1, 0, 0, 0], w3[1, 1, 0, 0], w3[1, 4, 0, 0] = 1.0, -1.0, 100.0
            w3[2, 4, 0, 0] = 100.0
            w3[3, 3, 0, 0] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv2(self.act1(self.conv1(x)))
        return self.conv3(torch.cat([self.act2(z), self.gate(z[:, 2:3])], dim=1))


def fooling():
    return wrap_model(Fooling(), name="fooling", preprocessing=PLAIN)


def smooth_photos(count: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    """``(count, 3, size, size)`` smooth colour fields (4 x 4 random colours, upsampled): natural-image-like in
    that their local Laplacian stays far below the fooling gate's 0.3."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 4, 4, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True).clamp(0, 1)


def save_photos(folder: Path, count: int) -> Path:
    """:func:`smooth_photos` as 8-bit PNGs ``p00.png``, ... in ``folder`` (made when missing): a dataset folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(smooth_photos(count)):
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"p{i:02d}.png")
    return folder


class ColourFeatures(nn.Module):
    """An "independent network" for unit tests: mean and spread of each colour, and their differences, pooled
    (8 features), then a linear head of 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = x.mean(dim=(2, 3)), x.std(dim=(2, 3))
        diff = torch.stack([mean[:, 0] - mean[:, 1], mean[:, 2] - mean[:, 0]], dim=1)
        return self.head(torch.cat([mean, std, diff], dim=1))


def colour_independent():
    from filterscope.trust import Independent

    module = ColourFeatures()
    return Independent(wrap_model(module, name="colours", preprocessing=PLAIN), module.head)


def color_classes():
    """A :class:`ColorNet` with class names (five classes): for activation atlases, whose cells are labelled."""
    return wrap_model(ColorNet(), name="colorclasses", preprocessing=PLAIN,
                      categories=("red thing", "green thing", "blue thing", "dark thing", "pale thing"))
