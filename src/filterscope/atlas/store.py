"""The atlas on disk: one folder with an SQLite database (WAL mode) and the image files beside it.

::

    OUT/atlas.sqlite            records (schema and migrations: .schema; queries: .reads, .writes)
    OUT/renders/MODEL/LAYER/    optimized images, u0007-paper-s0-1a2b3c4d.png (+ .npy for other than 1 or 3 channels)
    OUT/activations/            per pass: images x units matrices of spatial means and maxima (.npy), and the
                                activation atlas's samples
    OUT/maps/MODEL/LAYER/       activation atlases: layouts, cells and icons
    OUT/.build.lock             held by the one build that writes (a second one waits)

Exemplar crops and thumbnails are small JPEGs stored in the database itself, so that each is committed
in the same transaction as its record. Every render file is written atomically (a temporary file renamed
into place) *before* its record is committed: a record always points to a whole file, and a build killed
at any moment leaves at worst a file without a record, which the next build writes again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from ..errors import AtlasError
from .map_store import MapQueries
from .reads import AtlasReader
from .schema import DB_NAME, SCHEMA, SCHEMA_VERSION, connect
from .writes import AtlasWriter

__all__ = ["AtlasStore", "SCHEMA_VERSION", "DB_NAME", "SCHEMA"]


class AtlasStore(AtlasReader, AtlasWriter, MapQueries):
    """An atlas folder (see the module docstring): its records, read (:class:`~.reads.AtlasReader`) and
    written (:class:`~.writes.AtlasWriter`); the schema and its migrations are :mod:`.schema`'s.

    ``AtlasStore(path)`` opens the atlas in ``path``, creating it when the folder is missing or empty;
    ``AtlasStore(path, create=False)`` only opens one; ``readonly=True`` opens it for reading only (the
    microscope). Reading methods need no lock; a build holds the folder's build lock (see
    :mod:`filterscope.atlas.build`). One object is for one thread.

    Raises:
        AtlasError: the folder is not an atlas (and not empty), its database is unreadable or corrupt,
            or it was written by a newer filterscope whose schema this one cannot read.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, readonly: bool = False) -> None:
        self.path = Path(path)
        self.db_path = self.path / DB_NAME
        new = not self.db_path.exists()
        if new:
            if self.path.exists() and not self.path.is_dir():
                raise AtlasError(f"{self.path} is a file, not an atlas folder")
            if not create or readonly:
                raise AtlasError(f"No atlas in {self.path} (no {DB_NAME}); make one with filterscope atlas build "
                                 f"{self.path} ...")
            if self.path.is_dir() and any(p.name != ".build.lock" for p in self.path.iterdir()):
                raise AtlasError(f"{self.path} is not empty and is not an atlas (no {DB_NAME}): choose a new or "
                                 "empty folder")
            self.path.mkdir(parents=True, exist_ok=True)
        self.readonly = readonly
        self._conn = connect(self.db_path, create=new, readonly=readonly)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"`` for a sound database."""
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])
