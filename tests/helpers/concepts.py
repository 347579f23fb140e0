"""A planted dictionary: a tiny CNN whose layer ``mix`` is a known sparse mix of K > C ground-truth features."""

from __future__ import annotations

import torch
from torch import nn

import filterscope as fs

FEATURES, CHANNELS, SIDE = 32, 12, 16


def planted_atoms(seed: int = 0) -> torch.Tensor:
    """``(FEATURES, CHANNELS)`` unit rows: the directions the features write into the layer."""
    atoms = torch.randn(FEATURES, CHANNELS, generator=torch.Generator().manual_seed(seed))
    return atoms / atoms.norm(dim=1, keepdim=True)


class Planted(nn.Module):
    """Input: one plane per feature (where it is present, as squares); ``mix``: a 1x1 convolution whose weights
    are the planted atoms, so each position of ``mix`` is the sum of its present features' atoms, scaled by their
    strength; ``head``: 5 class logits."""

    def __init__(self, atoms: torch.Tensor) -> None:
        super().__init__()
        self.mix = nn.Conv2d(FEATURES, CHANNELS, 1, bias=False)
        self.mix.weight.data = atoms.T[:, :, None, None].clone()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(CHANNELS, 5))
        torch.manual_seed(0)
        nn.init.normal_(self.head[2].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(x))


def planted_model(seed: int = 0) -> fs.LoadedModel:
    preprocessing = fs.Preprocessing(input_size=SIDE, resize_size=SIDE, mean=(0.0,) * FEATURES,
                                     std=(1.0,) * FEATURES)
    return fs.wrap_model(Planted(planted_atoms(seed)), name="planted", preprocessing=preprocessing)


def shapes(count: int, seed: int = 1) -> torch.Tensor:
    """``(count, FEATURES, SIDE, SIDE)`` synthetic images: each feature one 4x4 square of strength 0.5-1 at a
    random place (two features present at a position on average)."""
    generator = torch.Generator().manual_seed(seed)
    out = torch.zeros(count, FEATURES, SIDE, SIDE)
    places = torch.randint(0, SIDE - 3, (count, FEATURES, 2), generator=generator)
    strengths = 0.5 + 0.5 * torch.rand(count, FEATURES, generator=generator)
    for i in range(count):
        for k in range(FEATURES):
            y, x = places[i, k].tolist()
            out[i, k, y:y + 4, x:x + 4] = strengths[i, k]
    return out
