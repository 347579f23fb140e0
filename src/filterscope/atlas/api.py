"""``fs.Atlas``: an atlas folder to build and to read, in one object."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

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

    Reading methods are those of :class:`~filterscope.atlas.reads.AtlasReader`.
    """

    def build(self, model: LoadedModel | torch.nn.Module, layers: str | Sequence[str], *,
              units: Sequence[int] | dict[str, Sequence[int]] | None = None,
              recipes: Sequence[str | Recipe] = ("paper",), seeds: Sequence[int] = (0,),
              dataset: str | os.PathLike[str] | Dataset | None = None, exemplars: int = 9, scores: bool = True,
              fit: str = "crop", runtime: Runtime | None = None, batch_size: int | None = None,
              retry_failed: bool = False, progress: BuildProgress | None = None, checkpoint_seconds: float = 30.0,
              cluster: str | None = None, circuits: bool = True, trust: bool = True) -> BuildSummary:
        """:func:`~filterscope.atlas.build.build_atlas` into this atlas (the same arguments); with ``cluster``
        (``"local:2"``, ``"tcp://host:8786"``) on Dask (:mod:`filterscope.atlas.distributed`)."""
        with dask_executor(cluster) as executor:
            return build_atlas(self, model, layers, units=units, recipes=recipes, seeds=seeds, dataset=dataset,
                               exemplars=exemplars, scores=scores, fit=fit, runtime=runtime, batch_size=batch_size,
                               retry_failed=retry_failed, progress=progress, checkpoint_seconds=checkpoint_seconds,
                               executor=executor, circuits=circuits, trust=trust)
