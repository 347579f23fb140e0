"""Shared by quality.py and recipe_variants.py: render the benchmark's units with a recipe and score them.

The 12 units (4 filters in each of 3 layers of EfficientNet-Lite0), the scores of
:mod:`filterscope.metrics` (activation ratio, robustness, high-frequency share), and two scores no recipe
was tuned on: robustness under *stronger* transforms (±16 % shifts, ±20° rotations, 0.8-1.2 scale) and
the transfer of class visualizations to EfficientNet-Lite2 (its probability for the class rendered).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

import filterscope as fs
from filterscope.engine.objectives import ClassLogit
from filterscope.metrics import activation_ratio, high_frequency_share, reference_max, robustness, transfer

UNITS = {"_blocks.8": [2, 9, 34, 91], "_blocks.11": [3, 30, 77, 150], "_blocks.15": [16, 164, 257, 306]}
CLASSES = {130: "flamingo", 309: "bee", 417: "balloon", 954: "banana"}
STRONG = {"shift": 0.16, "degrees": 20.0, "scale": (0.8, 1.2)}


@dataclass
class Scores:
    """Per-unit scores of one recipe (lists in the order of UNITS) and its seconds per filter."""

    seconds: float
    ratio: list[float]
    robust: list[float]
    strong: list[float]
    hf: list[float]

    def mean(self, key: str) -> float:
        return statistics.mean(getattr(self, key))

    def to_dict(self) -> dict:
        return {"s/filter": self.seconds, "ratio": self.ratio, "robust": self.robust, "strong": self.strong,
                "hf": self.hf}


def units(per_layer: int = 4) -> list[tuple[str, int]]:
    return [(layer, f) for layer, filters in UNITS.items() for f in filters[:per_layer]]


def score_units(model, recipe, crops, *, runtime=None, seed: int = 0, per_layer: int = 4) -> Scores:
    """Render every unit with ``recipe`` (one batch per layer, timed) and score it."""
    seconds, ratio, robust, strong, hf = 0.0, [], [], [], []
    for layer, filters in UNITS.items():
        filters = filters[:per_layer]
        start = time.perf_counter()
        result = fs.visualize_filters(model, layer, filters, recipe=recipe, seed=seed, runtime=runtime)
        seconds += time.perf_counter() - start
        for i, objective in enumerate(result.objectives):
            image = result.images[i:i + 1]
            ref = reference_max(model, objective, crops)
            ratio.append(float(activation_ratio(model, objective, image, ref)[0]))
            robust.append(float(robustness(model, objective, image, ref, samples=16)[0]))
            strong.append(float(robustness(model, objective, image, ref, samples=16, seed=1, **STRONG)[0]))
            hf.append(float(high_frequency_share(image)[0]))
    return Scores(seconds / len(ratio), ratio, robust, strong, hf)


def class_transfer(model, other, recipe, *, runtime=None, seed: int = 0) -> dict:
    """Render each class of CLASSES on ``model``; ``other``'s probability for that class and top-1 hits."""
    start = time.perf_counter()
    result = fs.render(model, [ClassLogit(c) for c in CLASSES], recipe=recipe, seed=seed, runtime=runtime)
    seconds = (time.perf_counter() - start) / len(CLASSES)
    with torch.no_grad():
        images = result.images.to(other.device)
        probabilities = other(fs.metrics.to_input_size(other, images)).softmax(dim=1).cpu()
    wanted = torch.tensor(list(CLASSES))
    own = probabilities[torch.arange(len(CLASSES)), wanted]
    top1 = [c for c, (k, _p) in zip(CLASSES, transfer(other, result.images)) if k == c]
    return {"s/class": seconds, "probability": own.tolist(), "top1": len(top1)}
