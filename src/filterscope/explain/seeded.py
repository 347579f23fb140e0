"""Renders seeded by an image: what a layer sees of it, what it keeps of it, and one unit made stronger in it.

* :func:`caricature`: start from the image and maximize the dot product times the cosine of the layer's
  activations with the image's own (:class:`~filterscope.objectives.Match` ``caricature``): what the layer
  sees, exaggerated.
* :func:`invert`: start from noise and maximize the cosine with the image's activations at the layer: what the
  layer keeps (feature inversion).
* :func:`accentuate`: start from the image and raise one unit's mean activation while a penalty keeps an
  earlier layer's activations close to the image's (Hamblin et al. 2024, "feature accentuation").

Each is the render loop (:func:`~filterscope.render.render`) with one of these objectives and, for the seeded
ones, the image as the starting point (:attr:`~filterscope.render.Stages.start`); the default recipe
(:data:`SEEDED`) is the fast ``filterscope`` one with a small jitter only, at the model's input size, one scale
(the targets are the activations at that size).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from ..arguments import checked
from ..engine.objectives import Channel, Match, Objective
from ..engine.recipes import Recipe, get_recipe
from ..engine.render import Stages, render
from ..engine.results import RenderResult, StepInfo
from ..engine.transforms import TransformStack
from ..errors import InvalidOptionError
from ..layers import LayerRef, resolve_layer
from ..runtime.core import Runtime
from ..zoo.model import LoadedModel, coerce_model
from .activations import ImageLike, as_image, layer_activations

__all__ = ["caricature", "invert", "accentuate", "seeded_recipe", "SEEDED"]


SEEDED = get_recipe("filterscope").replace(name="seeded", steps=256, relu_override_steps=0,
                                            transforms=TransformStack(jitter=2, scales=(), angles=()))
"""The default: the ``filterscope`` recipe (spectral, decorrelated colour) with 256 steps and only a 2 px
jitter: the targets are activations at positions, which rotations and rescaling would misalign (with the
``filterscope`` recipe's own transforms, the cosine of an inversion of the cat at ``_blocks.8`` stops at 0.73;
with these, 0.96)."""


def seeded_recipe(model: LoadedModel, recipe: Recipe | str | None) -> Recipe:
    """``recipe`` (default :data:`SEEDED`) at the model's input size, one scale (its size taken as the reference,
    so that the one scale is the input's height and width)."""
    chosen = SEEDED if recipe is None else (get_recipe(recipe) if isinstance(recipe, str) else recipe)
    return dataclasses.replace(chosen, scales=1, reference_size=chosen.size)


def _render(model: LoadedModel, objective: Objective, recipe: Recipe, start: torch.Tensor | None, seed: int,
            runtime: Runtime | None, callback: Callable[[StepInfo], None] | None) -> RenderResult:
    stages = dataclasses.replace(Stages.from_recipe(recipe, model.preprocessing.input_shape), start=start)
    return render(model, objective, recipe=recipe, seed=seed, runtime=runtime, stages=stages, callback=callback)


@checked
def caricature(model: LoadedModel | torch.nn.Module, image: ImageLike, layer: str | LayerRef, *,
               recipe: Recipe | str | None = None, seed: int = 0, fit: str = "crop",
               runtime: Runtime | None = None, callback: Callable[[StepInfo], None] | None = None) -> RenderResult:
    """What ``layer`` sees in ``image``, exaggerated (module docstring); ``values`` is the objective."""
    loaded, seen, ref, acts = layer_activations(model, image, layer, fit=fit)
    objective = Match(ref, acts, "caricature", seen.name)
    return _render(loaded, objective, seeded_recipe(loaded, recipe), seen.pixels, seed, runtime, callback)


@checked
def invert(model: LoadedModel | torch.nn.Module, image: ImageLike, layer: str | LayerRef, *,
           recipe: Recipe | str | None = None, seed: int = 0, fit: str = "crop",
           runtime: Runtime | None = None, callback: Callable[[StepInfo], None] | None = None) -> RenderResult:
    """An image whose ``layer`` activations match ``image``'s, from noise; ``values`` is their cosine."""
    loaded, seen, ref, acts = layer_activations(model, image, layer, fit=fit)
    return _render(loaded, Match(ref, acts, "cosine", seen.name), seeded_recipe(loaded, recipe), None, seed, runtime,
                   callback)


@checked
def accentuate(model: LoadedModel | torch.nn.Module, image: ImageLike, layer: str | LayerRef, unit: int, *,
               keep: str | LayerRef, weight: float = 1.0, recipe: Recipe | str | None = None, seed: int = 0,
               fit: str = "crop", runtime: Runtime | None = None,
               callback: Callable[[StepInfo], None] | None = None) -> RenderResult:
    """``image`` changed to raise ``unit`` of ``layer``, kept close to the original in ``keep``'s activations
    (minus ``weight`` times their mean squared difference)."""
    if weight < 0:
        raise InvalidOptionError(f"weight must be at least 0 (got {weight})")
    loaded = coerce_model(model)
    seen = as_image(loaded, image, fit)
    _, _, keep_ref, kept = layer_activations(loaded, seen, keep, fit=fit)
    objective = Channel(resolve_layer(loaded, layer), unit) + weight * Match(keep_ref, kept, "closeness", seen.name)
    return _render(loaded, objective, seeded_recipe(loaded, recipe), seen.pixels, seed, runtime, callback)
