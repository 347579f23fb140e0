"""``fs.Atlas``: an atlas folder to build and to read, in one object."""

from __future__ import annotations

from typing import Any

import torch

from ..zoo.registry import LoadedModel
from .build import BuildSummary, build_atlas
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

    Reading methods are those of :class:`~filterscope.atlas.store.AtlasStore`.
    """

    def build(self, model: LoadedModel | torch.nn.Module, layers: str | list[str], *, cluster: str | None = None,
              **options: Any) -> BuildSummary:
        """:func:`~filterscope.atlas.build.build_atlas` into this atlas (same keyword arguments); with
        ``cluster`` (``"local:2"``, ``"tcp://host:8786"``) on Dask (:mod:`filterscope.atlas.distributed`)."""
        with dask_executor(cluster) as executor:
            return build_atlas(self, model, layers, executor=executor, **options)
