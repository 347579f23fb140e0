"""Tiny CNNs with hand-set weights, whose right answers are known exactly."""

from __future__ import annotations

import torch
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
