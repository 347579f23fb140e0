"""``fs.Atlas``: an atlas folder to build and to read, in one object."""

from __future__ import annotations

from typing import Any

import torch

from ..zoo.registry import LoadedModel
from .build import BuildSummary, build_atlas
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

    def build(self, model: LoadedModel | torch.nn.Module, layers: str | list[str], **options: Any) -> BuildSummary:
        """:func:`~filterscope.atlas.build.build_atlas` into this atlas (same keyword arguments)."""
        return build_atlas(self, model, layers, **options)
