"""What two networks share and where they differ: one paired pass of the same images through both.

:func:`diff` runs each network over the images once, keeping for every compared layer its Gram matrix over the
images (:mod:`.cka`) and, for the layer pairs to match, their activations pooled to a small grid
(:mod:`.matching`). The result, :class:`ModelDiff`, holds the layer x layer CKA matrix (with each layer of A's
best partner in B) and each matched pair's :class:`~.matching.LayerMatch`.

The networks are any two a user can load (two architectures, or one at two checkpoints: the same model with two
weights); each sees the images at its own input size.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..analysis.inputs import Images, image_list, prepare_image
from ..arguments import checked
from ..concepts.sae import SAESettings
from ..errors import InvalidOptionError
from ..layers import LayerRef, list_layers, resolve_layer
from ..metrics import to_input_size
from ..runtime.core import ANALYSIS_BATCH, Forward, Runtime
from ..zoo.model import LoadedModel, coerce_model
from .cka import cka_matrix, gram, image_features
from .crosscoder import ConceptSplit, concept_split, paired_vectors, train_crosscoder
from .matching import MAX_GRID, LayerMatch, match_units

__all__ = ["ModelDiff", "diff", "default_layers", "MIN_IMAGES", "CKA_GRID", "MAX_LAYERS"]

MIN_IMAGES = 10
"""Images a diff needs at least (the debiased CKA needs 4; a matching's null, many more)."""
CKA_GRID = 2
"""Each image's activations are averaged over a grid this side for CKA (2: four regions, so where a unit fires
counts, not only whether)."""
MAX_LAYERS = 32
"""Layers compared per network by default at most (evenly spaced)."""
_NUMBERED = re.compile(r"^[^.]+\.\d+$")  # a top-level container's numbered child: _blocks.3, features.4, layer1.0


@dataclass(frozen=True)
class ModelDiff:
    """Two networks compared over the same images (see the module docstring).

    Attributes:
        model_a, model_b: The networks' names (with their weights where given).
        layers_a, layers_b: The layers compared, in running order.
        cka: ``cka[i][j]``: linear CKA of ``layers_a[i]`` with ``layers_b[j]``.
        matches: The matched layer pairs.
        concepts: Each matched pair's crosscoder record (shared and exclusive concepts), when asked for.
        images: How many images; ``debiased``: the CKA estimator; ``grid``: CKA's pooling grid.
    """

    model_a: str
    model_b: str
    layers_a: tuple[str, ...]
    layers_b: tuple[str, ...]
    cka: tuple[tuple[float, ...], ...]
    matches: tuple[LayerMatch, ...]
    images: int
    debiased: bool = True
    grid: int = CKA_GRID
    seconds: float = 0.0
    concepts: tuple[ConceptSplit, ...] = ()

    def best(self) -> list[tuple[str, str, float]]:
        """Each layer of A with its most similar layer of B and their CKA."""
        out = []
        for name, row in zip(self.layers_a, self.cka):
            j = max(range(len(row)), key=row.__getitem__)
            out.append((name, self.layers_b[j], row[j]))
        return out

    def same_names(self) -> list[tuple[str, float]]:
        """CKA of each layer with the layer of the same name in B (the diagonal, for two checkpoints or
        architectures that share names)."""
        index = {name: j for j, name in enumerate(self.layers_b)}
        return [(name, self.cka[i][index[name]]) for i, name in enumerate(self.layers_a) if name in index]

    def match(self, layer_a: str) -> LayerMatch | None:
        return next((m for m in self.matches if m.layer_a == layer_a), None)

    def to_dict(self) -> dict[str, object]:
        return {"model_a": self.model_a, "model_b": self.model_b, "layers_a": list(self.layers_a),
                "layers_b": list(self.layers_b), "cka": [list(row) for row in self.cka],
                "matches": [m.to_dict() for m in self.matches], "images": self.images, "debiased": self.debiased,
                "grid": self.grid, "seconds": self.seconds, "concepts": [c.to_dict() for c in self.concepts]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelDiff:
        return cls(str(data["model_a"]), str(data["model_b"]), tuple(str(v) for v in data["layers_a"]),
                   tuple(str(v) for v in data["layers_b"]),
                   tuple(tuple(float(v) for v in row) for row in data["cka"]),
                   tuple(LayerMatch.from_dict(m) for m in data["matches"]), int(data["images"]),
                   bool(data.get("debiased", True)), int(data.get("grid", CKA_GRID)), float(data.get("seconds", 0.0)),
                   tuple(ConceptSplit.from_dict(c) for c in data.get("concepts") or ()))


def default_layers(model: LoadedModel, count: int = MAX_LAYERS) -> list[str]:
    """The layers compared by default: the numbered children of the model's top-level containers with a spatial
    grid (an EfficientNet's ``_blocks.N``, a torchvision ResNet's ``layer1.0``, …), else every layer with one; at
    most ``count``, evenly spaced in running order."""
    grids = [info.name for info in list_layers(model) if len(info.shape) == 3 and info.name]
    numbered = [name for name in grids if _NUMBERED.match(name)]
    chosen = numbered or grids
    if len(chosen) > count:
        chosen = [chosen[round(i * (len(chosen) - 1) / (count - 1))] for i in range(count)]
    return chosen


class _Pass:
    """What one network's pass keeps: each compared layer's image features (for its Gram matrix) and the
    activations of the layers to match (pooled to at most :data:`MAX_GRID`)."""

    def __init__(self, compared: Sequence[LayerRef], kept: Sequence[LayerRef], grid: int) -> None:
        self.compared, self.kept, self.grid = list(compared), list(kept), grid
        self.features: dict[LayerRef, list[torch.Tensor]] = {ref: [] for ref in self.compared}
        self.grids: dict[LayerRef, list[torch.Tensor]] = {ref: [] for ref in self.kept}

    def take(self, activations: Mapping[LayerRef, torch.Tensor]) -> None:
        for ref in self.compared:
            self.features[ref].append(image_features(activations[ref].float().cpu(), self.grid))
        for ref in self.kept:
            act = activations[ref].float().cpu()
            side = min(act.shape[-1], act.shape[-2], MAX_GRID) if act.dim() == 4 else 0
            self.grids[ref].append(torch.nn.functional.adaptive_avg_pool2d(act, side) if side else act)

    def grams(self) -> list[torch.Tensor]:
        return [gram(torch.cat(self.features[ref])) for ref in self.compared]

    def kept_grid(self, ref: LayerRef) -> torch.Tensor:
        return torch.cat(self.grids[ref])


def _run(model: LoadedModel, images: list[Any] | torch.Tensor, work: _Pass, runtime: Runtime | None,
         progress: Callable[[int, int], None] | None) -> None:
    """One pass of ``images`` (files or PIL images, decoded here a batch at a time, or a tensor) through
    ``model``."""
    refs = list(dict.fromkeys([*work.compared, *work.kept]))
    total = len(images)
    with torch.no_grad(), Forward(model, refs, runtime) as forward:
        for start in range(0, total, ANALYSIS_BATCH):
            chunk = images[start:start + ANALYSIS_BATCH]
            batch = to_input_size(model, chunk) if isinstance(chunk, torch.Tensor) else \
                torch.stack([prepare_image(model, image).pixels for image in chunk])
            work.take(forward(model.preprocessing.normalize(batch.to(model.device))))
            if progress is not None:
                progress(min(start + ANALYSIS_BATCH, total), total)


def _pairs(a: LoadedModel, b: LoadedModel, pairs: Sequence[str | tuple[str, str]] | None, compared_a: list[str],
           compared_b: list[str]) -> list[tuple[LayerRef, LayerRef]]:
    """The layer pairs to match: ``"name"`` (the same name in both) or ``(name_a, name_b)``; by default the deepest
    compared layer of A with its namesake in B, else B's deepest."""
    if pairs is None:
        last = compared_a[-1]
        pairs = [(last, last if last in compared_b else compared_b[-1])]
    out = []
    for pair in pairs:
        name_a, name_b = (pair, pair) if isinstance(pair, str) else pair
        out.append((resolve_layer(a, name_a), resolve_layer(b, name_b)))
    return out


def _named(model: LoadedModel) -> str:
    return f"{model.name} ({model.weights})"


@checked
def diff(a: LoadedModel | torch.nn.Module, b: LoadedModel | torch.nn.Module, images: torch.Tensor | Images, *,
         layers_a: Sequence[str] | None = None, layers_b: Sequence[str] | None = None,
         pairs: Sequence[str | tuple[str, str]] | None = None, grid: int = CKA_GRID, debiased: bool = True,
         shuffles: int = 3, concepts: int | None = None, concept_k: int = 32, seed: int = 0,
         runtime: Runtime | None = None,
         progress: Callable[[str, int, int], None] | None = None) -> ModelDiff:
    """Compare networks ``a`` and ``b`` over ``images`` (files or PIL images, or a ``(N,C,H,W)`` tensor in [0, 1]:
    :data:`MIN_IMAGES` at least, diverse ones): CKA of every layer of ``layers_a`` (default
    :func:`default_layers`) with every layer of ``layers_b``, and the unit matching of each of ``pairs`` (a layer
    name both networks have, or a ``(layer of a, layer of b)`` pair; default: A's deepest compared layer with its
    namesake in B, else with B's deepest). ``grid``: CKA's pooling grid; ``shuffles``: the matching null's
    shuffled-image draws. ``concepts``: also train a crosscoder of ``concepts`` latents (``concept_k`` active per
    vector on average) on each matched pair, for its shared and exclusive concepts (:mod:`.crosscoder`).
    ``progress(what, done, total)`` during each pass and the training.

    Raises:
        InvalidOptionError: too few images, an unknown layer, or a grid below 1.
    """
    started = time.perf_counter()
    first, second = coerce_model(a), coerce_model(b)
    if grid < 1:
        raise InvalidOptionError(f"grid must be at least 1 (got {grid})")
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise InvalidOptionError(f"diff() takes images as a (N,C,H,W) tensor; got shape {tuple(images.shape)}")
        found: list[Any] | torch.Tensor = images
    else:
        found = image_list(images)
    if len(found) < MIN_IMAGES:
        raise InvalidOptionError(f"A diff needs at least {MIN_IMAGES} images (got {len(found)}): give a folder of "
                                 "a few hundred diverse ones")
    names_a = [str(resolve_layer(first, n)) for n in (layers_a or default_layers(first))]
    names_b = [str(resolve_layer(second, n)) for n in (layers_b or default_layers(second))]
    matched = _pairs(first, second, pairs, names_a, names_b)
    passes = []
    for label, model, names, kept in (("A", first, names_a, [p[0] for p in matched]),
                                      ("B", second, names_b, [p[1] for p in matched])):
        work = _Pass([resolve_layer(model, n) for n in names], kept, grid)
        _run(model, found, work, runtime, _labelled(progress, f"network {label}"))
        passes.append(work)
    table = cka_matrix(passes[0].grams(), passes[1].grams(), debiased=debiased)
    matches = tuple(match_units(passes[0].kept_grid(ra), passes[1].kept_grid(rb), layer_a=str(ra),
                                layer_b=str(rb), shuffles=shuffles, seed=seed) for ra, rb in matched)
    splits = tuple(_concepts(passes[0].kept_grid(ra), passes[1].kept_grid(rb), str(ra), str(rb),
                             SAESettings(concepts, min(concept_k, concepts), "batchtopk", seed=seed), progress)
                   for ra, rb in matched) if concepts else ()
    return ModelDiff(_named(first), _named(second), tuple(names_a), tuple(names_b),
                     tuple(tuple(float(v) for v in row) for row in table), matches, len(found), debiased, grid,
                     time.perf_counter() - started, splits)


def _labelled(progress: Callable[[str, int, int], None] | None, what: str) -> Callable[[int, int], None] | None:
    """``progress`` with ``what`` filled in."""
    if progress is None:
        return None
    report = progress
    return lambda done, total: report(what, done, total)


def _concepts(a: torch.Tensor, b: torch.Tensor, layer_a: str, layer_b: str, settings: SAESettings,
              progress: Callable[[str, int, int], None] | None) -> ConceptSplit:
    """A crosscoder of one matched pair's grids, as the diff keeps it."""
    vectors_a, vectors_b, images = paired_vectors(a, b)
    def trained(step: int, steps: int, loss: float) -> None:
        if progress is not None:
            progress("crosscoder", step, steps)

    crosscoder = train_crosscoder(vectors_a, vectors_b, images, settings, layer_a=layer_a, layer_b=layer_b,
                                  progress=trained)
    return concept_split(crosscoder, vectors_a, vectors_b, images)
