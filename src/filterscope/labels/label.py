"""A layer's labels from a model and image files: its activations, the images' concepts, the search."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch

from ..analysis.inputs import prepare_image
from ..arguments import checked
from ..errors import InvalidOptionError
from ..layers import LayerRef, check_channel, resolve_layer
from ..runtime.core import Runtime
from ..trust.describe import hierarchy
from ..trust.independent import Independent
from ..trust.unit import unit_maxima
from ..zoo.model import LoadedModel, coerce_model
from .concepts import ConceptMatrix, from_wordnet_ids, wordnet_id
from .metrics import DEFAULT_METRIC
from .search import MIN_IMAGES, NULL_DRAWS, UnitLabel, check_label, label_units

__all__ = ["image_concepts", "label_layer", "file_maxima"]

_CHUNK = 64


def image_concepts(files: Sequence[str | os.PathLike[str]], independent: Independent | None = None) -> ConceptMatrix:
    """The concepts of image ``files``: from the WordNet ids in their names (or folders') when every one has one,
    else from ``independent``'s top-1 class of each image.

    Raises:
        InvalidOptionError: some files have no WordNet id and no independent network is given.
    """
    wnids = [wordnet_id(f) for f in files]
    if all(wnids):
        return from_wordnet_ids(wnids)
    if independent is None:
        missing = [str(f) for f, w in zip(files, wnids) if not w][:3]
        raise InvalidOptionError(f"{len(missing)}+ image(s) have no WordNet id in their name or folder (e.g. "
                                 f"{', '.join(missing)}): name them so, or label them with an independent network")
    classes, _ = hierarchy()
    predicted: list[str | None] = []
    for start in range(0, len(files), _CHUNK):
        pixels = torch.stack([prepare_image(independent.model, f).pixels for f in files[start:start + _CHUNK]])
        predicted += [classes[int(c)].wnid for c in independent.embed(pixels)[1]]
    return from_wordnet_ids(predicted, source=f"predictions of {independent.name}")


def file_maxima(model: LoadedModel, ref: LayerRef, files: Sequence[str | os.PathLike[str]],
                runtime: Runtime | None = None, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """``(N, C)``: each image file's spatial maximum of every unit of ``ref``, decoded a chunk at a time."""
    parts = []
    for start in range(0, len(files), _CHUNK):
        pixels = torch.stack([prepare_image(model, f).pixels for f in files[start:start + _CHUNK]])
        parts.append(unit_maxima(model, ref, pixels, runtime))
        if progress is not None:
            progress(min(start + _CHUNK, len(files)), len(files))
    return torch.cat(parts)


@checked
def label_layer(model: LoadedModel | torch.nn.Module, layer: str, files: Sequence[str | os.PathLike[str]], *,
                units: Sequence[int] | None = None, check: str | None = None, metric: str = DEFAULT_METRIC,
                length: int = 3, beam: int = 5, min_images: int = MIN_IMAGES, null_draws: int = NULL_DRAWS,
                independent: Independent | None = None, seed: int = 0,
                runtime: Runtime | None = None, progress: Callable[[str, int, int], None] | None = None
                ) -> list[UnitLabel]:
    """Labels of ``units`` (default all) of ``layer`` over image ``files`` (:func:`label_units`), or with ``check``
    that description scored for each unit (:func:`check_label`). The images' concepts: :func:`image_concepts`,
    with ``independent`` (default: the embedded independent network) where some files have no WordNet id.

    Raises:
        InvalidOptionError: a bad unit, too few images, an unknown concept in ``check``.
    """
    loaded = coerce_model(model)
    ref = resolve_layer(loaded, layer)
    for unit in units or ():
        check_channel(loaded, ref, unit)
    if independent is None and not all(wordnet_id(f) for f in files):
        from ..trust import independent_network

        independent = independent_network(explained=loaded.name)
    concepts = image_concepts(files, independent)
    values = file_maxima(loaded, ref, files, runtime,
                         (lambda done, total: progress("activations", done, total)) if progress else None)
    if check is not None:
        return [check_label(values, concepts, u, check, metric_name=metric)
                for u in (units if units is not None else range(values.shape[1]))]
    return label_units(values, concepts, units, metric_name=metric, length=length, beam=beam, min_images=min_images,
                       null_draws=null_draws, seed=seed,
                       progress=(lambda done, total: progress("labels", done, total)) if progress else None)
