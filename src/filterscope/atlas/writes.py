"""The atlas's write side: what a build records, each call one transaction, taking typed records
(:mod:`.records`). Only the process that holds the build lock writes (:mod:`.build`); every render file is
written (atomically) before the record that names it is committed."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from ..analysis.receptive_field import ReceptiveField
from ..files import file_sha256
from ..trust.unit import UnitTrust
from ..zoo.preprocessing import Preprocessing
from ..zoo.weights import WeightsSource
from .records import CircuitPair, CircuitSection, Crop, FinishedRender, NewExemplar, PlannedRender, UnitPassStats
from .schema import now, transaction

__all__ = ["AtlasWriter", "record_files", "file_digest"]

_VALUES = ("initial_activation", "final_activation", "activation_ratio", "robustness", "high_frequency_share",
           "seconds")


def _number(value: float | None) -> float | None:
    """A float for SQLite, with NaN and infinities as NULL."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def file_digest(path: Path) -> tuple[int, str]:
    """A file's size and SHA-256 (hex)."""
    return path.stat().st_size, file_sha256(path)


def record_files(conn: sqlite3.Connection, root: Path, names: Iterable[str | None]) -> None:
    """Record the size and hash of each file ``names`` (paths in the atlas folder ``root``; ``None`` skipped),
    inside the caller's transaction: the files are already written, the record naming them is being committed."""
    rows = []
    for name in names:
        if name is not None:
            size, digest = file_digest(root / name)
            rows.append((name, size, digest, now()))
    conn.executemany("INSERT OR REPLACE INTO files (path, size, sha256, recorded) VALUES (?, ?, ?, ?)", rows)


class AtlasWriter:
    """Writes over an open atlas connection (``self._conn``) of the atlas folder ``self.path``."""

    _conn: sqlite3.Connection
    path: Path

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception)."""
        with transaction(self._conn) as conn:
            yield conn

    def add_model(self, name: str, weights: WeightsSource, weights_hash: str, source: str | None,
                  preprocessing: Preprocessing) -> int:
        """The id of the model (added when new)."""
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO models (name, weights, weights_hash, source, preprocessing, created, "
                         "weights_source) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (name, str(weights), weights_hash, source, json.dumps(preprocessing.to_dict(), sort_keys=True),
                          now(), weights.to_json()))
            row = conn.execute("SELECT id FROM models WHERE name = ? AND weights_hash = ?",
                               (name, weights_hash)).fetchone()
        return int(row[0])

    def add_layer(self, model_id: int, name: str, channels: int, shape: Sequence[int]) -> int:
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO layers (model_id, name, channels, shape) VALUES (?, ?, ?, ?)",
                         (model_id, name, channels, json.dumps(list(shape))))
            row = conn.execute("SELECT id FROM layers WHERE model_id = ? AND name = ?", (model_id, name)).fetchone()
        return int(row[0])

    def set_receptive_field(self, layer_id: int, field: ReceptiveField) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE layers SET receptive_field = ? WHERE id = ?", (json.dumps(field.to_dict()), layer_id))

    def add_renders(self, planned: Sequence[PlannedRender]) -> None:
        """Plan renders (``status = pending``) unless a render with the same key exists."""
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO renders (layer_id, unit, objective, recipe_name, recipe, seed, settings, key, "
                "status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
                [(p.layer_id, p.unit, p.objective, p.recipe_name, p.recipe, p.seed, p.settings.to_json(), p.key)
                 for p in planned])

    def finish_renders(self, finished: Sequence[FinishedRender]) -> None:
        """Record finished renders (their files already written) in one transaction."""
        rows = [{**asdict(f), **{k: _number(getattr(f, k)) for k in _VALUES}, "finished": now()} for f in finished]
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE renders SET status = :status, initial_activation = :initial_activation, "
                "final_activation = :final_activation, activation_ratio = :activation_ratio, "
                "robustness = :robustness, high_frequency_share = :high_frequency_share, file = :file, "
                "array_file = :array_file, seconds = :seconds, message = :message, finished = :finished "
                "WHERE id = :id", rows)
            record_files(conn, self.path, [name for f in finished for name in (f.file, f.array_file)])

    def add_dataset(self, source: str, fingerprint: str, paths: Sequence[str], hashes: Sequence[str]) -> int:
        with self.transaction() as conn:
            row = conn.execute("SELECT id FROM datasets WHERE fingerprint = ?", (fingerprint,)).fetchone()
            if row is not None:
                return int(row[0])
            cursor = conn.execute("INSERT INTO datasets (source, fingerprint, images, created) VALUES (?, ?, ?, ?)",
                                  (source, fingerprint, len(paths), now()))
            dataset_id = int(cursor.lastrowid or 0)
            conn.executemany("INSERT INTO dataset_images VALUES (?, ?, ?, ?)",
                             [(dataset_id, i, p, h) for i, (p, h) in enumerate(zip(paths, hashes))])
        return dataset_id

    def add_pass(self, layer_id: int, dataset_id: int, settings: str, exemplars: int) -> tuple[int, str]:
        """The pass of a layer over a dataset with these settings (JSON) and exemplar count (added when new):
        its id and status (``pending`` or ``done``)."""
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO passes (layer_id, dataset_id, settings, exemplars, status) "
                         "VALUES (?, ?, ?, ?, 'pending')", (layer_id, dataset_id, settings, exemplars))
            row = conn.execute("SELECT id, status FROM passes WHERE layer_id = ? AND dataset_id = ? AND settings = ? "
                               "AND exemplars = ?", (layer_id, dataset_id, settings, exemplars)).fetchone()
        return int(row["id"]), str(row["status"])

    def finish_pass(self, pass_id: int, stats: Sequence[UnitPassStats], exemplars: Sequence[NewExemplar], *,
                    skipped: int, seconds: float, means_file: str, maxima_file: str) -> None:
        """Record a finished pass: every unit's statistics and exemplars, in one transaction."""
        stat_rows = [(pass_id, s.unit, _number(s.stats.mean), _number(s.stats.std), _number(s.stats.max),
                      _number(s.stats.min), _number(s.stats.fraction_positive), s.stats.images,
                      json.dumps(s.stats.histogram), json.dumps(s.cofiring)) for s in stats]
        exemplar_rows = [(pass_id, e.unit, e.kind, e.rank, e.image, e.value, e.y, e.x, json.dumps(e.box),
                          json.dumps(e.source_box)) for e in exemplars]
        with self.transaction() as conn:
            conn.execute("DELETE FROM unit_stats WHERE pass_id = ?", (pass_id,))
            conn.execute("DELETE FROM exemplars WHERE pass_id = ?", (pass_id,))
            conn.executemany("INSERT INTO unit_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", stat_rows)
            conn.executemany("INSERT INTO exemplars (pass_id, unit, kind, rank, image, value, y, x, box, source_box) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", exemplar_rows)
            conn.execute("UPDATE passes SET status = 'done', skipped = ?, seconds = ?, means_file = ?, "
                         "maxima_file = ?, finished = ? WHERE id = ?",
                         (skipped, seconds, means_file, maxima_file, now(), pass_id))
            record_files(conn, self.path, [means_file, maxima_file])

    def set_crops(self, crops: Sequence[Crop]) -> None:
        """Store exemplar crops and thumbnails in one transaction."""
        with self.transaction() as conn:
            conn.executemany("UPDATE exemplars SET crop = ?, thumbnail = ? WHERE id = ?",
                             [(c.crop, c.thumbnail, c.id) for c in crops])

    def add_circuit_pair(self, pair: CircuitPair) -> None:
        """Record a layer pair's expanded weights (their file already written), replacing an older record."""
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO circuit_pairs (source_layer_id, target_layer_id, kernel, file, "
                         "sha256, seconds, finished) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (pair.source_layer_id, pair.target_layer_id, json.dumps(list(pair.kernel)), pair.file,
                          pair.sha256, _number(pair.seconds), now()))
            record_files(conn, self.path, [pair.file])

    def set_unit_trust(self, layer_id: int, records: Sequence[UnitTrust]) -> None:
        """Store units' trust records in one transaction (replacing what they had)."""
        with self.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO unit_trust (layer_id, unit, data, finished) VALUES (?, ?, ?, ?)",
                             [(layer_id, r.unit, r.to_json(), now()) for r in records])

    def set_circuit_sections(self, sections: Sequence[CircuitSection]) -> None:
        """Store units' circuit sections in one transaction (replacing what a unit had in that section)."""
        with self.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO unit_circuits (layer_id, unit, section, data) "
                             "VALUES (?, ?, ?, ?)",
                             [(c.layer_id, c.unit, c.section, json.dumps(c.data.to_dict(), allow_nan=False))
                              for c in sections])
