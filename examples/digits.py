"""Your own model, as filterscope loads it: ``filterscope visualize --model examples/digits.py:digits ...``.

A small grayscale CNN for 28 x 28 digits (MNIST-sized), trained here in a few seconds on scikit-learn's
``load_digits`` (8 x 8 scans upsampled to 28 px; ``pip install scikit-learn``). The factory returns the
network with its preprocessing, so filterscope knows it takes one channel at 28 x 28 px:

    filterscope layers examples/digits.py:digits
    filterscope visualize -m examples/digits.py:digits -l relu3 -f 0-7 --relu-override 16 -o out/digits

Run this file to write a few digits as PNGs to analyse (``python examples/digits.py out/digit-images``).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import filterscope as fs

PREPROCESSING = fs.Preprocessing(input_size=28, resize_size=28, mean=(0.2,), std=(0.3,))


class DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.relu3 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.pool(self.relu3(self.conv3(x))).flatten(1))


def digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 digits as ``(N,1,28,28)`` in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    upsampled = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1)
    return upsampled, torch.tensor(data.target)


@functools.cache
def trained() -> DigitsNet:
    """The network after 8 epochs of Adam (about 3 s on 2 cores; 84 % training accuracy), seeded."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = DigitsNet()
        images, labels = digit_images()
        x = PREPROCESSING.normalize(images)
        optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
        for _ in range(8):
            for start in range(0, len(x), 64):
                optimizer.zero_grad()
                F.cross_entropy(net(x[start:start + 64]), labels[start:start + 64]).backward()
                optimizer.step()
    return net.eval()


def digits() -> fs.LoadedModel:
    """The factory filterscope calls: the network, its name, preprocessing and class names."""
    return fs.wrap_model(trained(), name="digits", preprocessing=PREPROCESSING,
                         categories=tuple(str(i) for i in range(10)))


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/digit-images")
    out.mkdir(parents=True, exist_ok=True)
    images, labels = digit_images()
    for i in range(10):
        fs.to_pil(images[i]).save(out / f"digit{i}-is-{int(labels[i])}.png")
    print(f"wrote 10 digits to {out}")
