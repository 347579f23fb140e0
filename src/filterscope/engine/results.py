"""What a render produces: :class:`RenderResult`, its file names, its metadata, and saving it.

A result holds the images and numbers of one activation-maximization run; this module decides how
they are named on disk (``MODEL-LAYER-fNNNN.png``, from :meth:`Objective.file_stem
<filterscope.objectives.Objective.file_stem>`), which provenance each PNG carries (model, weights,
objective, seed, recipe, activations, runtime settings, version) and writes them with
:func:`save_result`. The render loop imports this module; nothing here runs a network.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .._version import __version__
from ..arguments import checked
from ..display import png_strip
from ..errors import FilterscopeError, InvalidOptionError
from ..images import read_png_metadata, save_array, save_png
from ..tensors import to_pil
from ..zoo.weights import WeightsSource
from .identity import RenderIdentity
from .objectives import Objective
from .recipes import Recipe

__all__ = ["RenderResult", "StepInfo", "output_name", "save_result", "finished_outputs"]


@dataclass(frozen=True)
class StepInfo:
    """Progress of one optimization step, passed to the ``callback`` of :func:`~filterscope.render.render`.

    Attributes:
        chunk, chunks: Which batch of the render this is, of how many.
        scale: Which scale of the schedule (0-based).
        width: The image width at this scale, px (:attr:`shape` has both sides).
        step: The step within this scale (0-based).
        steps_done, total_steps: Steps of this batch done so far (this one included), of how many.
        values: ``(B,)`` the objectives before this step.
        shape: The image ``(height, width)`` at this scale.
    """

    chunk: int
    chunks: int
    scale: int
    width: int
    step: int
    steps_done: int
    total_steps: int
    values: torch.Tensor
    shape: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if self.shape == (0, 0):
            object.__setattr__(self, "shape", (self.width, self.width))


@dataclass
class RenderResult:
    """Images and numbers of one activation-maximization run.

    Attributes:
        images: ``(N,C,H,W)`` float in [0, 1] on the CPU, one per objective (C: the model's input channels).
        objectives: The resolved objectives, in order.
        values: ``(N,)`` each objective on its final (clipped) image.
        initial_values: ``(N,)`` each objective on its starting noise image.
        history: ``(N, total_steps)`` the objective before each Adam step.
        recipe, seed: What produced the images.
        model_name, weights: Which network, with which weights (``str(weights)`` says it in words).
        seconds: Wall time of the optimization.
        extra: More metadata (the runtime settings: device, precision, memory format, threads, batch size).
        copy_numbers: For each image, which copy of its objective it is (0 for the first).
        status: For each image, ``ok``, ``inactive`` (the objective was exactly 0 at the start and at the
            end: a dead unit, a flat image) or ``non-finite`` (NaN or infinity appeared: the image is
            meaningless and is never saved).
    """

    images: torch.Tensor
    objectives: list[Objective]
    values: torch.Tensor
    initial_values: torch.Tensor
    history: torch.Tensor
    recipe: Recipe
    seed: int
    model_name: str
    weights: WeightsSource
    seconds: float
    extra: dict[str, str] = field(default_factory=dict)
    copy_numbers: list[int] = field(default_factory=list)
    status: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.objectives)

    def pil(self, index: int, display: Sequence[int] | None = None) -> Image.Image:
        """Image ``index`` as an 8-bit PIL image: grayscale for 1 channel, RGB for 3, otherwise a
        false-color preview of the channels ``display`` names (see :func:`~filterscope.tensors.to_pil`)."""
        return to_pil(self.images[index], display)

    def to_pil(self, display: Sequence[int] | None = None) -> list[Image.Image]:
        """Every image as an 8-bit PIL image (see :meth:`pil`)."""
        return [self.pil(i, display) for i in range(len(self))]

    def _repr_png_(self) -> bytes:
        """The images side by side: what a notebook shows for a result (:mod:`filterscope.display`)."""
        return png_strip(self.to_pil())

    def metadata(self, index: int) -> dict[str, str]:
        """Text metadata of image ``index``: model, weights, objective, layer, filter, seed, recipe, ..."""
        obj = self.objectives[index]
        meta = {
            "filterscope_version": __version__,
            "model": self.model_name,
            "weights": str(self.weights),
            "weights_source": self.weights.to_json(),
            "objective": obj.description,
            "seed": str(self.seed),
            "recipe": self.recipe.to_json(),
            "final_activation": f"{float(self.values[index]):.6g}",
            "initial_activation": f"{float(self.initial_values[index]):.6g}",
        }
        meta.update(obj.metadata())
        meta.update(self.extra)
        if self.status:
            meta["status"] = self.status[index]
        return meta

    def failed(self) -> list[int]:
        """Indices of the images whose values went non-finite (never saved)."""
        return [i for i, s in enumerate(self.status) if s == "non-finite"]

    def file_name(self, index: int) -> str:
        """The file name of image ``index``: :func:`output_name`, with ``-copyN`` for repeats."""
        name = output_name(self.model_name, self.objectives[index])
        if self.copy_numbers:  # the render knows, also when the copies came in different batches
            n = self.copy_numbers[index]
        else:
            n = sum(output_name(self.model_name, o) == name for o in self.objectives[:index])
        return f"{name[:-4]}-copy{n}.png" if n else name

    @staticmethod
    def concatenate(parts: Sequence[RenderResult]) -> RenderResult:
        """One result of several batches' (in order)."""
        first = parts[0]
        return RenderResult(
            images=torch.cat([p.images for p in parts]),
            objectives=[o for p in parts for o in p.objectives],
            values=torch.cat([p.values for p in parts]),
            initial_values=torch.cat([p.initial_values for p in parts]),
            history=torch.cat([p.history for p in parts]),
            recipe=first.recipe, seed=first.seed, model_name=first.model_name, weights=first.weights,
            seconds=sum(p.seconds for p in parts), extra=first.extra,
            copy_numbers=[n for p in parts for n in p.copy_numbers],
            status=[s for p in parts for s in p.status],
        )


@checked
def output_name(model_name: str, objective: Objective) -> str:
    """File name of one visualization: ``resnet34-layer4.2.relu-f0484.png`` and similar."""
    return f"{model_name}-{objective.file_stem()}.png"


@checked
def save_result(result: RenderResult, folder: str | os.PathLike[str], *, display: Sequence[int] | None = None,
                identities: Sequence[RenderIdentity] | None = None) -> list[Path]:
    """Save every image of ``result`` in ``folder`` under :meth:`RenderResult.file_name`, with its
    metadata, each file atomically; images whose values went non-finite (:meth:`RenderResult.failed`)
    are not saved. Returns the PNG paths written, in order.

    With ``identities`` (one per image, :mod:`filterscope.identity`), each PNG records its identity's key as
    ``render_key``: what :func:`finished_outputs` compares when a run resumes.

    1- and 3-channel images are PNGs (grayscale, RGB). Images with another channel count are saved whole
    as ``.npy`` (``(C,H,W)`` float32 in [0, 1]) beside a PNG preview of the channels ``display`` names as
    red, green, blue (default the first three); the PNG's metadata names the array and the mapping.
    """
    folder = Path(folder)
    failed = set(result.failed())
    channels = result.images.shape[1]
    shown = tuple(display) if display is not None else None
    if shown is not None and not all(0 <= c < channels for c in shown):
        raise InvalidOptionError(f"Display channels {','.join(map(str, shown))} do not exist: the images have "
                                 f"{channels} channels (0-{channels - 1})")
    paths = []
    for i in range(len(result)):
        if i in failed:
            continue
        meta, path = result.metadata(i), folder / result.file_name(i)
        if identities is not None:
            meta["render_key"] = identities[i].key
        if channels not in (1, 3):
            array = save_array(result.images[i].numpy().astype(np.float32), path.with_suffix(".npy"))
            meta["array"] = array.name
            meta["display"] = ",".join(map(str, shown or range(min(3, channels))))
        paths.append(save_png(result.pil(i, shown), path, meta))
    return paths


def finished_outputs(folder: str | os.PathLike[str], model_name: str, objectives: Sequence[Objective],
                     identities: Sequence[Sequence[RenderIdentity]]) -> dict[int, list[Path]]:
    """The objectives (by index) whose images are all in ``folder`` already with the same identity
    (``identities[i][n]``: copy ``n`` of objective ``i``; :mod:`filterscope.identity`): a run that was
    interrupted can skip them. Files that cannot be read, went non-finite, or were made otherwise (another
    key, or none: PNGs written before identities were recorded) do not count."""
    folder = Path(folder)
    done: dict[int, list[Path]] = {}
    for index, objective in enumerate(objectives):
        name = output_name(model_name, objective)
        wanted = identities[index]
        paths = [folder / (name if n == 0 else f"{name[:-4]}-copy{n}.png") for n in range(len(wanted))]
        try:
            metas = [read_png_metadata(p) for p in paths]
        except FilterscopeError:
            continue
        if all(meta.get("render_key") == identity.key and meta.get("status") != "non-finite"
               for meta, identity in zip(metas, wanted)):
            done[index] = paths
    return done
