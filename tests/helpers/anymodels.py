"""Researchers' own networks, as factory functions the command line loads with ``--model FILE.py:FACTORY``.

* ``digits``: the docs' example (examples/digits.py), a 1-channel 28 px CNN trained (in about three
  seconds, once per process) on scikit-learn's ``load_digits`` upsampled from 8 to 28 px.
* ``multispectral``: 4 input channels, a non-square 64 x 256 input (a satellite strip), seeded weights.
* ``byte_range`` / ``unit_range``: the same network taking 0-255 input and [0, 1] input.
* ``functional``: ReLUs applied with ``F.relu`` in ``forward`` (no module outputs the activation).
* ``tuple_head`` / ``dict_backbone``: modules whose outputs are a tuple and a dict.
* ``fixed_head``: a flatten + Linear head that only runs at the 28 px input.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import filterscope as fs


def _example(name: str):
    """A module of the repository's examples/ folder (the docs' "your own model")."""
    path = Path(__file__).resolve().parents[2] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"filterscope_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_DIGITS = _example("digits")
DIGITS_PREP = _DIGITS.PREPROCESSING
digit_images = _DIGITS.digit_images
digits = _DIGITS.digits


def _seeded(module: nn.Module, seed: int, scale: float = 0.3) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    return module


class StripNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def multispectral() -> fs.LoadedModel:
    return fs.wrap_model(_seeded(StripNet(), 1), name="strip",
                         preprocessing=fs.Preprocessing(input_size=(64, 256), resize_size=64,
                                                        mean=(0.3, 0.3, 0.3, 0.4), std=(0.2, 0.2, 0.2, 0.25)))


class SmallRGB(nn.Module):
    def __init__(self, divide: float = 1.0) -> None:
        super().__init__()
        self.divide = divide
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.conv1(x / self.divide)))


def byte_range() -> fs.LoadedModel:
    """Takes 0-255 pixels (and divides by 255 itself)."""
    return fs.wrap_model(_seeded(SmallRGB(255.0), 2), name="bytes",
                         preprocessing=fs.Preprocessing(32, 32, mean=(0.0,) * 3, std=(1 / 255,) * 3))


def unit_range() -> fs.LoadedModel:
    """The same function of the image as :func:`byte_range`, taking [0, 1] pixels."""
    return fs.wrap_model(_seeded(SmallRGB(1.0), 2), name="units",
                         preprocessing=fs.Preprocessing(32, 32, mean=(0.0,) * 3, std=(1.0,) * 3))


class FunctionalNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x)))


def functional() -> fs.LoadedModel:
    return fs.wrap_model(_seeded(FunctionalNet(), 3), name="functional",
                         preprocessing=fs.Preprocessing(32, 32, mean=(0.5,) * 3, std=(0.25,) * 3))


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(8, 4, 1)
        self.b = nn.Conv2d(8, 6, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(x), torch.relu(self.b(x))


class TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = TwoHeads()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.stem(x))


def tuple_head() -> fs.LoadedModel:
    return fs.wrap_model(_seeded(TupleNet(), 4), name="tuplenet",
                         preprocessing=fs.Preprocessing(32, 32, mean=(0.5,) * 3, std=(0.25,) * 3))


class Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.aux = nn.Conv2d(8, 5, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = torch.relu(self.conv(x))
        return {"out": out, "aux": self.aux(out)}


class DictNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.classifier = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {"logits": self.classifier(features["out"]).mean(dim=(2, 3)), "aux": features["aux"]}


def dict_backbone() -> fs.LoadedModel:
    return fs.wrap_model(_seeded(DictNet(), 5), name="dictnet",
                         preprocessing=fs.Preprocessing(32, 32, mean=(0.5,) * 3, std=(0.25,) * 3))


class FixedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 28 * 28, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def fixed_head() -> fs.LoadedModel:
    return fs.wrap_model(_seeded(FixedHead(), 6, 0.05), name="fixed", preprocessing=DIGITS_PREP)
