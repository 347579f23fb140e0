"""The activation atlas's records: samples, maps and cells (schema 5; see :mod:`.schema`), read and written.

A mixin of :class:`~.store.AtlasStore` beside :class:`~.reads.AtlasReader` and :class:`~.writes.AtlasWriter`,
kept apart because maps are a concept of their own. Each write is one transaction; an icon's file is written
before the record that names it.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import AtlasError
from ..maps.settings import MapSettings
from .schema import now, transaction
from .writes import record_files

__all__ = ["MapSamplesRecord", "MapRecord", "MapCellRecord", "NewCell", "FinishedIcon", "MapQueries"]


@dataclass(frozen=True)
class MapSamplesRecord:
    """The activation samples a pass collected: how (``positions``, ``seed``), how many, and their files."""

    id: int
    pass_id: int
    positions: str
    seed: int
    count: int
    vectors_file: str
    places_file: str
    classes_file: str
    attributions_file: str


@dataclass(frozen=True)
class MapRecord:
    """A map: its samples, settings, layout files and quality (trustworthiness at k = 10)."""

    id: int
    samples_id: int
    key: str
    settings: MapSettings
    layout_file: str
    cells_file: str
    means_file: str
    trustworthiness: float | None
    seconds: float | None
    finished: str


@dataclass(frozen=True)
class NewCell:
    """A kept cell of a new map (its icon is pending)."""

    cell: int
    row: int
    col: int
    count: int
    label: int | None
    label_name: str | None
    label_share: float | None
    key: str


@dataclass(frozen=True)
class MapCellRecord:
    """A cell: position, count, label (the top attributed class, its name and share of the members), its icon
    (``file`` relative to the atlas; ``None`` until rendered) with the objective before and after and the
    cosine of its centre activation with the cell's mean."""

    map_id: int
    cell: int
    row: int
    col: int
    count: int
    label: int | None
    label_name: str | None
    label_share: float | None
    key: str
    file: str | None
    status: str | None
    initial: float | None
    final: float | None
    cosine: float | None


@dataclass(frozen=True)
class FinishedIcon:
    """A cell's icon as rendered (``file`` in the atlas), or ``failed`` (no file; the next build renders it)."""

    cell: int
    file: str | None
    status: str
    initial: float
    final: float
    cosine: float


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


class MapQueries:
    """Map queries over an open atlas connection (``self._conn``) of the atlas folder ``self.path``."""

    _conn: sqlite3.Connection
    path: Path

    def _has_maps(self) -> bool:
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'maps'"
                                  ).fetchone() is not None

    # --------------------------------------------------------------------------------------- samples
    def map_samples(self, pass_id: int, positions: str, seed: int) -> MapSamplesRecord | None:
        if not self._has_maps():
            return None
        row = self._conn.execute("SELECT * FROM map_samples WHERE pass_id = ? AND positions = ? AND seed = ?",
                                 (pass_id, positions, seed)).fetchone()
        return _samples(row) if row else None

    def map_samples_by_id(self, samples_id: int) -> MapSamplesRecord:
        row = self._conn.execute("SELECT * FROM map_samples WHERE id = ?", (samples_id,)).fetchone()
        if row is None:
            raise AtlasError(f"No map samples {samples_id} in the atlas")
        return _samples(row)

    def add_map_samples(self, pass_id: int, positions: str, seed: int, count: int, files: Sequence[str]) -> int:
        with transaction(self._conn) as c:
            c.execute("INSERT OR REPLACE INTO map_samples (pass_id, positions, seed, count, vectors_file, places_file, "
                      "classes_file, attributions_file, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (pass_id, positions, seed, count, *files, now()))
            record_files(c, self.path, files)
        found = self.map_samples(pass_id, positions, seed)
        assert found is not None
        return found.id

    # ------------------------------------------------------------------------------------------ maps
    def map_by_key(self, key: str) -> MapRecord | None:
        if not self._has_maps():
            return None
        row = self._conn.execute("SELECT * FROM maps WHERE key = ?", (key,)).fetchone()
        return _map(row) if row else None

    def maps_of_layer(self, layer_id: int) -> list[MapRecord]:
        """The layer's maps, newest first."""
        if not self._has_maps():
            return []
        rows = self._conn.execute("SELECT maps.* FROM maps JOIN map_samples s ON s.id = maps.samples_id "
                                  "JOIN passes p ON p.id = s.pass_id WHERE p.layer_id = ? ORDER BY maps.id DESC",
                                  (layer_id,)).fetchall()
        return [_map(r) for r in rows]

    def map_by_id(self, map_id: int) -> MapRecord:
        row = self._conn.execute("SELECT * FROM maps WHERE id = ?", (map_id,)).fetchone() if self._has_maps() else None
        if row is None:
            raise AtlasError(f"No activation atlas {map_id} in the atlas")
        return _map(row)

    def map_source(self, map_id: int) -> tuple[int, int]:
        """The exemplar pass whose samples the map lays out, and that pass's layer (atlas ids)."""
        row = self._conn.execute("SELECT s.pass_id, p.layer_id FROM maps JOIN map_samples s ON s.id = maps.samples_id "
                                 "JOIN passes p ON p.id = s.pass_id WHERE maps.id = ?", (map_id,)).fetchone()
        if row is None:
            raise AtlasError(f"No activation atlas {map_id} in the atlas")
        return int(row[0]), int(row[1])

    def add_map(self, samples_id: int, key: str, settings: MapSettings, files: Sequence[str],
                trustworthiness: float | None, seconds: float, cells: Sequence[NewCell]) -> int:
        """Record a laid-out map and its cells (icons pending), in one transaction."""
        with transaction(self._conn) as c:
            cursor = c.execute("INSERT INTO maps (samples_id, key, settings, layout_file, cells_file, means_file, "
                               "trustworthiness, seconds, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               (samples_id, key, json.dumps(settings.to_dict(), sort_keys=True), *files,
                                _number(trustworthiness), seconds, now()))
            map_id = int(cursor.lastrowid or 0)
            c.executemany("INSERT INTO map_cells (map_id, cell, row, col, count, label, label_name, label_share, key) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          [(map_id, x.cell, x.row, x.col, x.count, x.label, x.label_name, _number(x.label_share),
                            x.key) for x in cells])
            record_files(c, self.path, files)
        return map_id

    def map_cells(self, map_id: int) -> list[MapCellRecord]:
        if not self._has_maps():
            return []
        rows = self._conn.execute("SELECT * FROM map_cells WHERE map_id = ? ORDER BY cell", (map_id,)).fetchall()
        return [_cell(r) for r in rows]

    def finish_icons(self, map_id: int, icons: Sequence[FinishedIcon]) -> None:
        with transaction(self._conn) as c:
            c.executemany("UPDATE map_cells SET file = ?, status = ?, initial = ?, final = ?, cosine = ?, finished = ? "
                          "WHERE map_id = ? AND cell = ?",
                          [(x.file, x.status, _number(x.initial), _number(x.final), _number(x.cosine), now(), map_id,
                            x.cell) for x in icons])
            record_files(c, self.path, [x.file for x in icons if x.file is not None])


def _samples(row: sqlite3.Row) -> MapSamplesRecord:
    """The record of a row (without its ``finished`` time; a Row iterates its values, not its keys)."""
    return MapSamplesRecord(**{k: row[k] for k in row.keys() if k != "finished"})  # noqa: SIM118


def _cell(row: sqlite3.Row) -> MapCellRecord:
    return MapCellRecord(**{k: row[k] for k in row.keys() if k != "finished"})  # noqa: SIM118


def _map(row: sqlite3.Row) -> MapRecord:
    values = {k: row[k] for k in row.keys()}  # noqa: SIM118 (a Row iterates values)
    values["settings"] = MapSettings.from_dict(json.loads(values["settings"]))
    return MapRecord(**values)
