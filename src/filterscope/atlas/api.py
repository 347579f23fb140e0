"""``fs.Atlas``: an atlas folder to build and to read, in one small object.

It is a face over the store (:class:`~.store.AtlasStore`, whose read side is :class:`~.reads.AtlasReader` and
write side :class:`~.writes.AtlasWriter`): what a user builds and reads is here; every record query, and the
write protocol a build follows, stay on ``atlas.store``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Self

import numpy as np
import torch

from ..engine.recipes import Recipe
from ..errors import AtlasError
from ..maps.result import ActivationMap, MapCell
from ..maps.settings import MapSettings
from ..runtime.core import Runtime
from ..zoo.model import LoadedModel
from .build import BuildProgress, BuildSummary, build_atlas
from .check import Problem, check_atlas
from .check import repair as repair_atlas
from .dataset import Dataset
from .distributed import dask_executor
from .records import LayerRecord, ModelRecord, UnitRecord
from .stages.concepts import ConceptRecord, concept_dictionaries, concepts_of
from .status import AtlasStatus, atlas_status
from .store import AtlasStore

__all__ = ["Atlas", "read_map"]


class Atlas:
    """An atlas folder: every unit of a model's layers, rendered once, with dataset exemplars.

    ::

        atlas = fs.Atlas("out/atlas")                       # opens it, or makes it when missing or empty
        atlas.build(model, ["_blocks.8"], units=range(16), dataset="photos/")
        atlas.status()                                      # renders, passes, maps and stages per layer
        atlas.unit("_blocks.8", 3)                          # renders, exemplars, statistics of one unit
        atlas.build(model, "_blocks.15", dataset="photos/", maps=True, recipes=())  # an activation atlas
        atlas.map("_blocks.15").figure()                    # its icons on the grid, labelled
        atlas.build(model, "_blocks.15", dataset="photos/", recipes=(), stages=[ConceptSettings(atoms=640)])  # concepts
        atlas.concepts("_blocks.15")                        # its concepts, most used first, with their top images
        atlas.check()                                       # damaged files and records; [] when sound

    (``ConceptSettings`` is :class:`filterscope.atlas.stages.concepts.ConceptSettings`.)

    ``Atlas(path)`` opens the atlas in ``path``, creating it when the folder is missing or empty;
    ``create=False`` only opens one; ``readonly=True`` opens it for reading only. Every other query is on
    ``atlas.store`` (:class:`~filterscope.atlas.store.AtlasStore`).

    Raises:
        AtlasError: the folder is not an atlas (and not empty), its database is unreadable or corrupt, or it
            was written by a newer filterscope.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, readonly: bool = False) -> None:
        self.store = AtlasStore(path, create=create, readonly=readonly)
        self.path = self.store.path

    def build(self, model: LoadedModel | torch.nn.Module, layers: str | Sequence[str], *,
              units: Sequence[int] | dict[str, Sequence[int]] | None = None,
              recipes: Sequence[str | Recipe] = ("paper",), seeds: Sequence[int] = (0,),
              dataset: str | os.PathLike[str] | Dataset | None = None, exemplars: int = 9, scores: bool = True,
              fit: str = "crop", runtime: Runtime | None = None, batch_size: int | None = None,
              retry_failed: bool = False, progress: BuildProgress | None = None, checkpoint_seconds: float = 30.0,
              cluster: str | None = None, circuits: bool | None = None, trust: bool | None = None,
              maps: MapSettings | bool = False, stages: Sequence[object] = ()) -> BuildSummary:
        """:func:`~filterscope.atlas.build.build_atlas` into this atlas (the same arguments); with ``cluster``
        (``"local:2"``, ``"tcp://host:8786"``) on Dask (:mod:`filterscope.atlas.distributed`)."""
        with dask_executor(cluster) as executor:
            return build_atlas(self.store, model, layers, units=units, recipes=recipes, seeds=seeds,
                               dataset=dataset, exemplars=exemplars, scores=scores, fit=fit, runtime=runtime,
                               batch_size=batch_size, retry_failed=retry_failed, progress=progress,
                               checkpoint_seconds=checkpoint_seconds, executor=executor, circuits=circuits,
                               trust=trust, maps=maps, stages=stages)

    def status(self) -> AtlasStatus:
        """What the atlas holds and what is left: renders per layer, recipe and seed; exemplar passes; activation
        atlases; the units with circuit and trust records."""
        return atlas_status(self.store)

    def models(self) -> list[ModelRecord]:
        return self.store.models()

    def layers(self, model: str | None = None) -> list[LayerRecord]:
        """The layers of ``model`` (the only one, when the atlas holds one)."""
        return self.store.layers(self.store.model(model).id)

    def layer(self, name: str, model: str | None = None) -> LayerRecord:
        return self.store.layer(self.store.model(model), name)

    def unit(self, layer: str, unit: int, model: str | None = None) -> UnitRecord:
        """Everything the atlas knows about one unit: renders, exemplars, statistics."""
        return self.store.unit(layer, unit, model)

    def map(self, layer: str, *, model: str | None = None, settings: MapSettings | None = None) -> ActivationMap:
        """The activation atlas of ``layer`` (the newest one, or the one made with ``settings``)."""
        record = self.layer(layer, model)
        found = self.store.maps_of_layer(record.id)
        if settings is not None:
            found = [m for m in found if m.settings == settings]
        if not found:
            raise AtlasError(f"No activation atlas of {layer} in {self.path}: make one with filterscope atlas map "
                             f"{self.path} -l {layer}")
        return read_map(self.store, found[0].id, record.name)

    def concepts(self, layer: str, model: str | None = None) -> list[ConceptRecord]:
        """The concepts of ``layer``'s newest dictionary (``atlas build --concepts N``), most used first, each with
        its usage, the unit it writes to most and its top images; the dictionary itself is
        ``concept_dictionaries(atlas.store, layer_id)[0].load(atlas.path)``."""
        record = self.layer(layer, model)
        found = concept_dictionaries(self.store, record.id)
        if not found:
            raise AtlasError(f"No concepts of {layer} in {self.path}: make them with filterscope atlas build "
                             f"{self.path} -l {layer} --dataset DIR --concepts N")
        return concepts_of(self.store, found[0].id)

    def check(self, *, repair: bool = False) -> list[Problem]:
        """Every problem of the atlas (see :mod:`filterscope.atlas.check`): empty when sound. With ``repair``,
        what they name is marked for the next build to redo and the damaged files are removed."""
        problems = check_atlas(self.store)
        if repair and problems:
            if any(p.kind == "database" for p in problems):
                raise AtlasError(f"{self.path}: the database is damaged; restore the folder from a copy")
            repair_atlas(self.store, problems)
        return problems

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Atlas({str(self.path)!r})"


def read_map(store: AtlasStore, map_id: int, layer: str) -> ActivationMap:
    """The map with atlas id ``map_id`` (of ``layer``), with its cells' members and mean activations."""
    m = store.map_by_id(map_id)
    samples = store.map_samples_by_id(m.samples_id)
    cells_of = np.load(store.path / m.cells_file)
    means = np.load(store.path / m.means_file)
    grid = m.settings.grid
    order = np.argsort(cells_of, kind="stable")
    bounds = np.searchsorted(cells_of[order], np.arange(grid * grid + 1))
    cells = [MapCell(c.row, c.col, c.count, c.label, c.label_name, c.label_share, means[k],
                     store.path / c.file if c.file else None, c.initial, c.final, c.cosine,
                     order[bounds[c.cell]:bounds[c.cell + 1]])
             for k, c in enumerate(store.map_cells(map_id))]
    return ActivationMap(layer, m.settings, np.load(store.path / m.layout_file),
                         np.load(store.path / samples.places_file, mmap_mode="r"),
                         store.pass_images(samples.pass_id), cells, m.trustworthiness)
