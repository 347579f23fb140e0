"""The icons of an activation atlas: each kept cell's mean activation vector, rendered.

A cell's icon maximizes :class:`~filterscope.objectives.DirectionNeuron` at the centre position of the layer:
the dot product is with the cell's mean vector *whitened* by the inverse of the second-moment matrix of all the
collected vectors (Lucid's ``layer_inverse_covariance``), so that directions every image has a lot of do not
dominate, with a ridge (:data:`RIDGE`: dead units make the matrix singular); it is shaped by the cosine with the
unwhitened mean (Lucid's ``dot * max(0.1, cos) ** 2``, whose cosine is with the whitened vector: measured, that
left the icons' activations at cosine 0.03-0.26 with their cells' means, against 0.01-0.83 with the mean's).
The recipe is the project's fast one at icon size.

:class:`IconTask` → :func:`icon_task` → :class:`IconTaskOutcome`: a batch of cells, like a render task (it runs
on any executor, reads and writes nothing); each icon is checked: its activation at the centre position and
that vector's cosine with the cell's (unwhitened) mean.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..engine.objectives import DirectionNeuron
from ..engine.recipes import Recipe, get_recipe
from ..engine.render import iter_render
from ..images import encode_png
from ..layers import resolve_layer
from ..runtime.core import Forward, Runtime
from ..zoo.model import LoadedModel

__all__ = ["ICON_SIZE", "ICON_POWER", "RIDGE", "icon_recipe", "second_moment", "whitening", "IconJob", "IconTask",
           "IconOutcome", "IconTaskOutcome", "icon_task", "centre_vectors"]

ICON_SIZE = 96
"""Icon side in pixels (Lucid's ``activation_atlas`` default)."""
ICON_POWER = 2.0
"""The cosine power of the icons' objective (Lucid's default)."""
RIDGE = 1.0
"""The whitening's ridge, as a fraction of the second-moment matrix's mean diagonal. Measured on 8 cells of a
6 x 6 map of Lite0 ``_blocks.15`` (400 crops): the cosine of the icon's centre activation with the cell's mean
was 0.04-0.83 at a ridge of 0.01 and of 0.1 (one or two icons near 0: their directions were dominated by
near-dead units), 0.45-0.85 (median 0.73) at 1.0; rendering the mean itself, unwhitened: 0.44-0.88."""


def icon_recipe(name: str = "filterscope", size: int = ICON_SIZE) -> Recipe:
    """The recipe of the icons: a named one (default: the fast ``filterscope`` recipe) at icon size (pixels at the
    recipe's reference input side, as all its numbers)."""
    return get_recipe(name).replace(size=size)


def second_moment(vectors: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """``X^T X / N`` of the ``(N, C)`` vectors (float64), ``chunk`` rows at a time."""
    total = np.zeros((vectors.shape[1], vectors.shape[1]))
    for start in range(0, len(vectors), chunk):
        block = np.asarray(vectors[start:start + chunk], dtype=np.float64)
        total += block.T @ block
    return total / max(len(vectors), 1)


def whitening(moment: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """The inverse of ``moment + ridge * mean(diag(moment)) * I``."""
    scale = float(np.mean(np.diag(moment))) or 1.0
    return np.linalg.inv(moment + ridge * scale * np.eye(len(moment)))


@dataclass(frozen=True)
class IconJob:
    """One cell's icon: the cell index, its render key, the whitened direction and the raw mean vector."""

    cell: int
    key: str
    direction: tuple[float, ...]
    mean: tuple[float, ...]


@dataclass(frozen=True)
class IconTask:
    """Render ``jobs`` (cells of the map of ``layer``) in one batch."""

    layer: str
    jobs: tuple[IconJob, ...]
    recipe: Recipe
    seed: int
    runtime: Runtime
    power: float = ICON_POWER
    cosine_with_mean: bool = True

    @property
    def label(self) -> str:
        return f"{self.layer} map icons {self.jobs[0].cell}-{self.jobs[-1].cell}"


@dataclass(frozen=True)
class IconOutcome:
    """A rendered icon: PNG bytes, the objective at the start and the end, the status, the cosine of its
    centre activation with the cell's mean."""

    cell: int
    key: str
    png: bytes
    initial: float
    final: float
    status: str
    cosine: float


@dataclass(frozen=True)
class IconTaskOutcome:
    outcomes: tuple[IconOutcome, ...]
    seconds: float


def centre_vectors(model: LoadedModel, layer: str, images: torch.Tensor, runtime: Runtime | None = None
                   ) -> torch.Tensor:
    """``(B, C)``: the layer's activation vector at the centre of its map, for images ``(B, 3, H, W)`` in [0, 1]."""
    ref = resolve_layer(model, layer)
    with torch.no_grad(), Forward(model, [ref], runtime) as forward:
        act = forward(model.preprocessing.normalize(images.to(model.device)))[ref]
    if act.dim() == 2:
        return act.float().cpu()
    return act[:, :, act.shape[2] // 2, act.shape[3] // 2].float().cpu()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a[None], b[None], eps=1e-8)[0])


def icon_task(model: LoadedModel, task: IconTask, report: Callable[[Any], None] | None = None) -> IconTaskOutcome:
    """Render an :class:`IconTask`'s icons (``report`` receives each Adam step's :class:`StepInfo`)."""
    started = time.perf_counter()
    ref = resolve_layer(model, task.layer)
    objectives = [DirectionNeuron(ref, job.direction, task.power, name=f"cell {job.cell}",
                                  cosine_with=job.mean if task.cosine_with_mean else None) for job in task.jobs]
    outcomes: list[IconOutcome] = []
    queue = list(task.jobs)
    for result in iter_render(model, objectives, recipe=task.recipe, seed=task.seed, runtime=task.runtime,
                              batch_size=len(objectives), callback=report):
        centres = centre_vectors(model, task.layer, result.images, task.runtime)
        for i in range(len(result)):
            job = queue.pop(0)
            status = result.status[i] if result.status else "ok"
            outcomes.append(IconOutcome(job.cell, job.key, encode_png(result.pil(i), result.metadata(i)),
                                        float(result.initial_values[i]), float(result.values[i]), status,
                                        _cosine(centres[i], torch.tensor(job.mean))))
    return IconTaskOutcome(tuple(outcomes), time.perf_counter() - started)
