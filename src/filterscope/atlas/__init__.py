"""Atlases: every unit of a model's layers, rendered once, with dataset exemplars, in a durable folder.

* :mod:`.store`: the folder (SQLite in WAL mode + image files), its schema and its queries;
* :mod:`.records`: what the store returns (plain dataclasses);
* :mod:`.exemplars`: the streaming per-unit exemplar heaps and statistics;
* :mod:`.dataset`: the images of an exemplar pass, with content hashes;
* :mod:`.build`: planning and running a build (exemplar pass, crops, renders), resumable;
* :mod:`.distributed`: the same on a Dask cluster (the atlas is written by the client);
* :mod:`.api`: :class:`Atlas`, the one object users need.
"""

from .api import Atlas
from .build import BuildProgress, BuildSummary, build_atlas
from .dataset import Dataset, list_dataset
from .distributed import DaskExecutor
from .exemplars import UnitTracker
from .records import ExemplarRecord, LayerRecord, ModelRecord, RenderRecord, StatusRow, UnitRecord, UnitStats
from .store import DB_NAME, SCHEMA, SCHEMA_VERSION, AtlasStore

__all__ = ["Atlas", "AtlasStore", "build_atlas", "DaskExecutor", "BuildProgress", "BuildSummary", "Dataset",
           "list_dataset", "UnitTracker", "ExemplarRecord", "LayerRecord", "ModelRecord", "RenderRecord", "StatusRow",
           "UnitRecord", "UnitStats", "DB_NAME", "SCHEMA", "SCHEMA_VERSION"]
