"""Atlases: every unit of a model's layers, rendered once, with dataset exemplars, in a durable folder.

A build is four steps, one module each: **plan** (:mod:`.build`: what the atlas lacks) → **typed tasks**
(:mod:`.tasks`: frozen dataclasses and the functions that do them) → **an executor** that maps a task
function over tasks (:mod:`.executors` here, :mod:`.distributed` on Dask) → **record** (:mod:`.build`, through
the store's write side).

* :mod:`.store`: the folder; :mod:`.schema` (tables, versions, migrations), :mod:`.reads` and :mod:`.writes`;
* :mod:`.records`: the typed records the read side returns and the write side takes;
* :mod:`.exemplars`: the streaming per-unit exemplar heaps and statistics;
* :mod:`.dataset`: the images of an exemplar pass, with content hashes;
* :mod:`.status`: what an atlas holds and what is left (:class:`AtlasStatus`);
* :mod:`.api`: :class:`Atlas`, the one object users need (a face over :class:`AtlasStore`).
"""

from .api import Atlas
from .build import BuildProgress, BuildSummary, build_atlas
from .dataset import Dataset, list_dataset
from .distributed import DaskExecutor
from .executors import Executor, LocalExecutor
from .exemplars import UnitTracker
from .records import (
    ExemplarRecord,
    LayerRecord,
    ModelRecord,
    RenderRecord,
    StatusRow,
    UnitRecord,
    UnitStats,
    UnitSummary,
)
from .schema import DB_NAME, SCHEMA, SCHEMA_VERSION
from .status import AtlasStatus
from .store import AtlasStore

__all__ = ["Atlas", "AtlasStore", "AtlasStatus", "build_atlas", "Executor", "LocalExecutor", "DaskExecutor",
           "BuildProgress", "BuildSummary", "Dataset", "list_dataset", "UnitTracker", "ExemplarRecord", "LayerRecord",
           "ModelRecord", "RenderRecord", "StatusRow", "UnitRecord", "UnitStats", "UnitSummary", "DB_NAME", "SCHEMA",
           "SCHEMA_VERSION"]
