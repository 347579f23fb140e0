"""``fs.Atlas``: an atlas folder to build and to read, in one object."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import AtlasError
from ..maps.result import ActivationMap, MapCell
from ..maps.settings import MapSettings
from ..recipes import Recipe
from ..runtime import Runtime
from ..zoo.model import LoadedModel
from .build import BuildProgress, BuildSummary, build_atlas
from .dataset import Dataset
from .distributed import dask_executor
from .store import AtlasStore

__all__ = ["Atlas"]


class Atlas(AtlasStore):
    """An atlas folder: every unit of a model's layers, rendered once, with dataset exemplars.

    ::

        atlas = fs.Atlas("out/atlas")                       # opens it, or makes it when missing or empty
        atlas.build(model, ["_blocks.8"], units=range(16), dataset="photos/")
        atlas.status()                                      # done / failed / pending per layer, recipe, seed
        atlas.unit("_blocks.8", 3)                          # renders, exemplars, statistics of one unit
        atlas.build(model, "_blocks.15", dataset="photos/", maps=True, recipes=())  # an activation atlas
        atlas.map("_blocks.15").figure()                    # its icons on the grid, labelled

    Reading methods are those of :class:`~filterscope.atlas.reads.AtlasReader`.
    """

    def build(self, model: LoadedModel | torch.nn.Module, layers: str | Sequence[str], *,
              units: Sequence[int] | dict[str, Sequence[int]] | None = None,
              recipes: Sequence[str | Recipe] = ("paper",), seeds: Sequence[int] = (0,),
              dataset: str | os.PathLike[str] | Dataset | None = None, exemplars: int = 9, scores: bool = True,
              fit: str = "crop", runtime: Runtime | None = None, batch_size: int | None = None,
              retry_failed: bool = False, progress: BuildProgress | None = None, checkpoint_seconds: float = 30.0,
              cluster: str | None = None, circuits: bool | None = None, trust: bool | None = None,
              maps: MapSettings | bool = False) -> BuildSummary:
        """:func:`~filterscope.atlas.build.build_atlas` into this atlas (the same arguments); with ``cluster``
        (``"local:2"``, ``"tcp://host:8786"``) on Dask (:mod:`filterscope.atlas.distributed`)."""
        with dask_executor(cluster) as executor:
            return build_atlas(self, model, layers, units=units, recipes=recipes, seeds=seeds, dataset=dataset,
                               exemplars=exemplars, scores=scores, fit=fit, runtime=runtime, batch_size=batch_size,
                               retry_failed=retry_failed, progress=progress, checkpoint_seconds=checkpoint_seconds,
                               executor=executor, circuits=circuits, trust=trust, maps=maps)

    def map(self, layer: str, *, model: str | None = None, settings: MapSettings | None = None) -> ActivationMap:
        """The activation atlas of ``layer`` (the newest one, or the one made with ``settings``)."""
        record = self.layer(self.model(model), layer)
        found = self.maps_of_layer(record.id)
        if settings is not None:
            found = [m for m in found if m.settings == settings]
        if not found:
            raise AtlasError(f"No activation atlas of {layer} in {self.path}: make one with filterscope atlas map "
                             f"{self.path} -l {layer}")
        return self.read_map(found[0].id, record.name)

    def read_map(self, map_id: int, layer: str) -> ActivationMap:
        """The map with atlas id ``map_id`` (of ``layer``)."""
        m = self.map_by_id(map_id)
        samples = self.map_samples_by_id(m.samples_id)
        cells_of = np.load(self.path / m.cells_file)
        means = np.load(self.path / m.means_file)
        grid = m.settings.grid
        order = np.argsort(cells_of, kind="stable")
        bounds = np.searchsorted(cells_of[order], np.arange(grid * grid + 1))
        cells = [MapCell(c.row, c.col, c.count, c.label, c.label_name, c.label_share, means[k],
                         self.path / c.file if c.file else None, c.initial, c.final, c.cosine,
                         order[bounds[c.cell]:bounds[c.cell + 1]])
                 for k, c in enumerate(self.map_cells(map_id))]
        return ActivationMap(layer, m.settings, np.load(self.path / m.layout_file),
                             np.load(self.path / samples.places_file, mmap_mode="r"),
                             self.pass_images(samples.pass_id), cells, m.trustworthiness)
