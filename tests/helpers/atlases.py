"""Shared atlas fixtures: a conv stack with known receptive fields, tiny recipes, image folders, a small atlas."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import filterscope as fs

from .models import PLAIN

TINY_RECIPE = dataclasses.replace(fs.get_recipe("paper"), size=24, scales=2, steps=4, reference_size=None)


def conv_stack() -> fs.LoadedModel:
    """A plain conv stack whose receptive fields are known: 3x3 s1 → 3x3 s2 → 5x5 s1 → 3x3 s1 dilation 2."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(6, 5, 5, padding=2), nn.ReLU(), nn.Conv2d(5, 4, 3, padding=2, dilation=2))
    return fs.wrap_model(net, name="stack", preprocessing=PLAIN)


def write_images(folder: Path, count: int, seed: int = 0, size: int = 40) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        array = (rng.random((size, size + 8, 3)) * 255).astype(np.uint8)
        sub = folder / ("a" if i % 3 else "b")
        sub.mkdir(exist_ok=True)
        path = sub / f"img{i:03d}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


ATLAS_CLI = ["-m", "resnet18", "-w", "random", "-l", "layer1.0.conv1", "--size", "32", "--scales", "2", "--steps",
             "3", "--batch-size", "1", "--no-scores", "-q"]


@pytest.fixture(scope="module")
def atlas(tmp_path_factory) -> Path:
    """A small atlas: layers 4 (units 0-2 rendered) and 6 (unit 0), exemplars from 8 images, circuits from 4 to 6."""
    root = tmp_path_factory.mktemp("microscope")
    write_images(root / "data", 8)
    model = conv_stack()
    fs.build_atlas(root / "atlas", model, ["6", "4"], units={"4": [0, 1, 2], "6": [0]}, recipes=[TINY_RECIPE],
                   dataset=root / "data", exemplars=3)
    return root / "atlas"
