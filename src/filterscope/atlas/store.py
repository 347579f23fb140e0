"""The atlas on disk: one folder with an SQLite database (WAL mode) and the image files beside it.

::

    OUT/atlas.sqlite            records (schema below, versioned with PRAGMA user_version)
    OUT/renders/MODEL/LAYER/    optimized images, u0007-paper-s0-1a2b3c4d.png (+ .npy for other than 1 or 3 channels)
    OUT/activations/            per pass: images x units matrices of spatial means and maxima (.npy)
    OUT/.build.lock             held by the one build that writes (a second one waits)

Exemplar crops and thumbnails are small JPEGs stored in the database itself, so that each is committed
in the same transaction as its record. Every render file is written atomically (a temporary file renamed
into place) *before* its record is committed: a record always points to a whole file, and a build killed
at any moment leaves at worst a file without a record, which the next build writes again.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import numpy as np

from .._version import __version__
from ..errors import AtlasError, did_you_mean
from .records import (
    ExemplarRecord,
    LayerRecord,
    ModelRecord,
    PassRecord,
    RenderRecord,
    StatusRow,
    UnitRecord,
    UnitStats,
)

__all__ = ["AtlasStore", "SCHEMA_VERSION", "DB_NAME", "SCHEMA", "render_key"]

DB_NAME = "atlas.sqlite"
FORMAT = "filterscope-atlas"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE models (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, weights TEXT NOT NULL, weights_hash TEXT NOT NULL,
    source TEXT, preprocessing TEXT NOT NULL, created TEXT NOT NULL, UNIQUE (name, weights_hash));
CREATE TABLE layers (
    id INTEGER PRIMARY KEY, model_id INTEGER NOT NULL REFERENCES models(id), name TEXT NOT NULL,
    channels INTEGER NOT NULL, shape TEXT NOT NULL, receptive_field TEXT, UNIQUE (model_id, name));
CREATE TABLE renders (
    id INTEGER PRIMARY KEY, layer_id INTEGER NOT NULL REFERENCES layers(id), unit INTEGER NOT NULL,
    objective TEXT NOT NULL, recipe_name TEXT NOT NULL, recipe TEXT NOT NULL, seed INTEGER NOT NULL,
    settings TEXT NOT NULL, key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('pending', 'ok', 'inactive', 'failed')),
    initial_activation REAL, final_activation REAL, activation_ratio REAL, robustness REAL,
    high_frequency_share REAL, file TEXT, array_file TEXT, seconds REAL, message TEXT, finished TEXT);
CREATE INDEX renders_by_unit ON renders (layer_id, unit);
CREATE TABLE datasets (
    id INTEGER PRIMARY KEY, source TEXT NOT NULL, fingerprint TEXT NOT NULL UNIQUE, images INTEGER NOT NULL,
    created TEXT NOT NULL);
CREATE TABLE dataset_images (
    dataset_id INTEGER NOT NULL REFERENCES datasets(id), idx INTEGER NOT NULL, path TEXT NOT NULL,
    sha256 TEXT NOT NULL, PRIMARY KEY (dataset_id, idx));
CREATE TABLE passes (
    id INTEGER PRIMARY KEY, layer_id INTEGER NOT NULL REFERENCES layers(id),
    dataset_id INTEGER NOT NULL REFERENCES datasets(id), settings TEXT NOT NULL, exemplars INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'done')), skipped INTEGER, seconds REAL,
    means_file TEXT, maxima_file TEXT, finished TEXT, UNIQUE (layer_id, dataset_id, settings, exemplars));
CREATE TABLE unit_stats (
    pass_id INTEGER NOT NULL REFERENCES passes(id), unit INTEGER NOT NULL, mean REAL, std REAL, max REAL,
    min REAL, fraction_positive REAL, images INTEGER NOT NULL, histogram TEXT NOT NULL, cofiring TEXT NOT NULL,
    PRIMARY KEY (pass_id, unit));
CREATE TABLE exemplars (
    id INTEGER PRIMARY KEY, pass_id INTEGER NOT NULL REFERENCES passes(id), unit INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('max', 'mean', 'min')), rank INTEGER NOT NULL, image INTEGER NOT NULL,
    value REAL NOT NULL, y INTEGER NOT NULL, x INTEGER NOT NULL, box TEXT NOT NULL, source_box TEXT NOT NULL,
    crop BLOB, thumbnail BLOB, UNIQUE (pass_id, unit, kind, rank));
"""

MIGRATIONS: dict[int, str] = {}
"""SQL that brings schema ``N - 1`` to ``N``, by ``N`` (none yet: version 1 is the first)."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _number(value: Any) -> float | None:
    """A float for SQLite, with NaN and infinities as NULL."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def render_key(weights_hash: str, layer: str, unit: int, objective: str, recipe_json: str, seed: int,
               settings: dict[str, Any]) -> str:
    """The identity of a render: the same key is the same image (the cache and resume test)."""
    text = json.dumps([weights_hash, layer, unit, objective, recipe_json, seed, settings], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class AtlasStore:
    """An atlas folder (see the module docstring): its records, read and written.

    ``AtlasStore(path)`` opens the atlas in ``path``, creating it when the folder is missing or empty;
    ``AtlasStore(path, create=False)`` only opens one. Reading methods need no lock; a build holds the folder's
    build lock (see :mod:`filterscope.atlas.build`). One object is for one thread.

    Raises:
        AtlasError: the folder is not an atlas (and not empty), its database is unreadable or corrupt,
            or it was written by a newer filterscope whose schema this one cannot read.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, readonly: bool = False) -> None:
        self.path = Path(path)
        self.db_path = self.path / DB_NAME
        if not self.db_path.exists():
            if self.path.exists() and not self.path.is_dir():
                raise AtlasError(f"{self.path} is a file, not an atlas folder")
            if not create or readonly:
                raise AtlasError(f"No atlas in {self.path} (no {DB_NAME}); make one with filterscope atlas build "
                                 f"{self.path} ...")
            if self.path.is_dir() and any(p.name != ".build.lock" for p in self.path.iterdir()):
                raise AtlasError(f"{self.path} is not empty and is not an atlas (no {DB_NAME}): choose a new or "
                                 "empty folder")
        self.readonly = readonly
        self._conn = self._connect(create=not self.db_path.exists())

    # ------------------------------------------------------------------------------------ connection
    def _connect(self, create: bool) -> sqlite3.Connection:
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        uri = f"file:{self.db_path.resolve()}{'?mode=ro' if self.readonly else ''}"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            if create:
                self._create(conn)
            elif not self.readonly:
                conn.execute("PRAGMA journal_mode = WAL")
            self._check(conn)
        except sqlite3.DatabaseError as exc:
            raise AtlasError(f"{self.db_path} is not a readable atlas database ({exc})") from None
        return conn

    def _create(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode = WAL")
        schema = (SCHEMA.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS")
                  .replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"))
        values = (("format", FORMAT), ("created_by", f"filterscope {__version__}"), ("created", _now()))
        meta = ", ".join(f"('{k}', '{v}')" for k, v in values)
        conn.executescript(f"BEGIN IMMEDIATE; {schema} INSERT OR IGNORE INTO meta VALUES {meta}; "
                           f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")

    def _check(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        fmt = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone() if "meta" in tables else None
        if fmt is None or fmt[0] != FORMAT:
            raise AtlasError(f"{self.db_path} is an SQLite database but not a filterscope atlas")
        if version > SCHEMA_VERSION:
            raise AtlasError(f"{self.path} was written by a newer filterscope (atlas schema {version}; this "
                             f"filterscope {__version__} reads up to {SCHEMA_VERSION}): upgrade filterscope")
        if version < SCHEMA_VERSION:
            if self.readonly:
                raise AtlasError(f"{self.path} has atlas schema {version}: open it once with filterscope atlas "
                                 f"build or status to upgrade it to {SCHEMA_VERSION}")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                conn.executescript(f"BEGIN IMMEDIATE; {MIGRATIONS[target]}; PRAGMA user_version = {target}; COMMIT;")

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if conn.in_transaction:
            conn.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception)."""
        with self._transaction(self._conn) as conn:
            yield conn

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

    # --------------------------------------------------------------------------------------- writing
    def add_model(self, name: str, weights: str, weights_hash: str, source: str | None,
                  preprocessing: dict[str, Any]) -> int:
        """The id of the model (added when new)."""
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO models (name, weights, weights_hash, source, preprocessing, created) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         (name, weights, weights_hash, source, json.dumps(preprocessing, sort_keys=True), _now()))
            row = conn.execute("SELECT id FROM models WHERE name = ? AND weights_hash = ?",
                               (name, weights_hash)).fetchone()
        return int(row[0])

    def add_layer(self, model_id: int, name: str, channels: int, shape: Sequence[int]) -> int:
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO layers (model_id, name, channels, shape) VALUES (?, ?, ?, ?)",
                         (model_id, name, channels, json.dumps(list(shape))))
            row = conn.execute("SELECT id FROM layers WHERE model_id = ? AND name = ?", (model_id, name)).fetchone()
        return int(row[0])

    def set_receptive_field(self, layer_id: int, field: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE layers SET receptive_field = ? WHERE id = ?", (json.dumps(field), layer_id))

    def add_renders(self, rows: Iterable[dict[str, Any]]) -> None:
        """Plan renders (``status = pending``) unless a render with the same key exists."""
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO renders (layer_id, unit, objective, recipe_name, recipe, seed, settings, key, "
                "status) VALUES (:layer_id, :unit, :objective, :recipe_name, :recipe, :seed, :settings, :key, "
                "'pending')",
                list(rows))

    def pending_renders(self, keys: Sequence[str], retry_failed: bool = False) -> list[sqlite3.Row]:
        """The planned renders among ``keys`` that are still to do (and the failed ones, when retrying)."""
        states = ("pending", "failed") if retry_failed else ("pending",)
        out: list[sqlite3.Row] = []
        for start in range(0, len(keys), 500):
            part = list(keys[start:start + 500])
            out.extend(self._conn.execute(
                f"SELECT * FROM renders WHERE key IN ({','.join('?' * len(part))}) AND status IN "
                f"({','.join('?' * len(states))}) ORDER BY layer_id, recipe_name, seed, unit", [*part, *states]))
        return out

    def finish_renders(self, rows: Sequence[dict[str, Any]]) -> None:
        """Record finished renders (their files already written) in one transaction."""
        clean = [{**row, **{k: _number(row.get(k)) for k in ("initial_activation", "final_activation",
                                                             "activation_ratio", "robustness",
                                                             "high_frequency_share", "seconds")},
                  "finished": _now()} for row in rows]
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE renders SET status = :status, initial_activation = :initial_activation, "
                "final_activation = :final_activation, activation_ratio = :activation_ratio, "
                "robustness = :robustness, high_frequency_share = :high_frequency_share, file = :file, "
                "array_file = :array_file, seconds = :seconds, message = :message, finished = :finished "
                "WHERE id = :id", clean)

    def add_dataset(self, source: str, fingerprint: str, paths: Sequence[str], hashes: Sequence[str]) -> int:
        with self.transaction() as conn:
            row = conn.execute("SELECT id FROM datasets WHERE fingerprint = ?", (fingerprint,)).fetchone()
            if row is not None:
                return int(row[0])
            cursor = conn.execute("INSERT INTO datasets (source, fingerprint, images, created) VALUES (?, ?, ?, ?)",
                                  (source, fingerprint, len(paths), _now()))
            dataset_id = int(cursor.lastrowid or 0)
            conn.executemany("INSERT INTO dataset_images VALUES (?, ?, ?, ?)",
                             [(dataset_id, i, p, h) for i, (p, h) in enumerate(zip(paths, hashes))])
        return dataset_id

    def add_pass(self, layer_id: int, dataset_id: int, settings: dict[str, Any], exemplars: int) -> sqlite3.Row:
        with self.transaction() as conn:
            text = json.dumps(settings, sort_keys=True)
            conn.execute("INSERT OR IGNORE INTO passes (layer_id, dataset_id, settings, exemplars, status) "
                         "VALUES (?, ?, ?, ?, 'pending')", (layer_id, dataset_id, text, exemplars))
            return conn.execute("SELECT * FROM passes WHERE layer_id = ? AND dataset_id = ? AND settings = ? AND "
                                "exemplars = ?", (layer_id, dataset_id, text, exemplars)).fetchone()

    def finish_pass(self, pass_id: int, stats: Sequence[dict[str, Any]], exemplars: Sequence[dict[str, Any]], *,
                    skipped: int, seconds: float, means_file: str, maxima_file: str) -> None:
        """Record a finished pass: every unit's statistics and exemplars, in one transaction."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM unit_stats WHERE pass_id = ?", (pass_id,))
            conn.execute("DELETE FROM exemplars WHERE pass_id = ?", (pass_id,))
            conn.executemany(
                "INSERT INTO unit_stats VALUES (:pass_id, :unit, :mean, :std, :max, :min, :fraction_positive, "
                ":images, :histogram, :cofiring)",
                [{**s, "pass_id": pass_id, **{k: _number(s[k]) for k in ("mean", "std", "max", "min",
                                                                         "fraction_positive")},
                  "histogram": json.dumps(s["histogram"]), "cofiring": json.dumps(s["cofiring"])} for s in stats])
            conn.executemany(
                "INSERT INTO exemplars (pass_id, unit, kind, rank, image, value, y, x, box, source_box) VALUES "
                "(:pass_id, :unit, :kind, :rank, :image, :value, :y, :x, :box, :source_box)",
                [{**e, "pass_id": pass_id, "box": json.dumps(e["box"]),
                  "source_box": json.dumps(e["source_box"])} for e in exemplars])
            conn.execute("UPDATE passes SET status = 'done', skipped = ?, seconds = ?, means_file = ?, "
                         "maxima_file = ?, finished = ? WHERE id = ?",
                         (skipped, seconds, means_file, maxima_file, _now(), pass_id))

    def exemplars_without_crops(self, pass_id: int, units: Sequence[int]) -> list[sqlite3.Row]:
        unit_set = set(units)
        rows = self._conn.execute("SELECT e.*, d.path FROM exemplars e JOIN passes p ON p.id = e.pass_id "
                                  "JOIN dataset_images d ON d.dataset_id = p.dataset_id AND d.idx = e.image "
                                  "WHERE e.pass_id = ? AND e.crop IS NULL ORDER BY e.image", (pass_id,)).fetchall()
        return [row for row in rows if row["unit"] in unit_set]

    def set_crops(self, crops: Sequence[tuple[int, bytes, bytes]]) -> None:
        """Store ``(exemplar id, crop JPEG, thumbnail JPEG)`` triples in one transaction."""
        with self.transaction() as conn:
            conn.executemany("UPDATE exemplars SET crop = ?, thumbnail = ? WHERE id = ?",
                             [(crop, thumb, i) for i, crop, thumb in crops])

    # --------------------------------------------------------------------------------------- reading
    def models(self) -> list[ModelRecord]:
        return [ModelRecord(r["id"], r["name"], r["weights"], r["weights_hash"], r["source"],
                            json.loads(r["preprocessing"]))
                for r in self._conn.execute("SELECT * FROM models ORDER BY id")]

    def model(self, name: str | None = None) -> ModelRecord:
        """The model called ``name`` (any of them when ``None`` and the atlas has exactly one)."""
        models = self.models()
        if not models:
            raise AtlasError(f"The atlas {self.path} holds no model yet")
        if name is None:
            if len({m.name for m in models}) > 1:
                raise AtlasError(f"The atlas {self.path} holds several models ({', '.join(m.name for m in models)}): "
                                 "name one with --model")
            return models[-1]
        matching = [m for m in models if m.name == name]
        if not matching:
            raise AtlasError(f"No model {name!r} in the atlas {self.path} (it holds "
                             f"{', '.join(m.name for m in models)}).{did_you_mean(name, [m.name for m in models])}")
        return matching[-1]

    def layers(self, model_id: int | None = None) -> list[LayerRecord]:
        query = "SELECT * FROM layers" + (" WHERE model_id = ?" if model_id is not None else "") + " ORDER BY id"
        return [LayerRecord(r["id"], r["model_id"], r["name"], r["channels"], json.loads(r["shape"]),
                            json.loads(r["receptive_field"]) if r["receptive_field"] else None)
                for r in self._conn.execute(query, () if model_id is None else (model_id,))]

    def layer(self, model: ModelRecord, name: str) -> LayerRecord:
        layers = self.layers(model.id)
        for layer in layers:
            if layer.name == name:
                return layer
        names = [layer.name for layer in layers]
        raise AtlasError(f"No layer {name!r} of {model.name} in the atlas {self.path} (it holds "
                         f"{', '.join(names) or 'none'}).{did_you_mean(name, names)}")

    def renders(self, layer_id: int, unit: int | None = None) -> list[RenderRecord]:
        query = "SELECT * FROM renders WHERE layer_id = ?" + (" AND unit = ?" if unit is not None else "")
        rows = self._conn.execute(query + " ORDER BY unit, recipe_name, seed, id",
                                  (layer_id,) if unit is None else (layer_id, unit))
        return [self._render(r) for r in rows]

    @staticmethod
    def _render(r: sqlite3.Row) -> RenderRecord:
        return RenderRecord(r["id"], r["unit"], r["objective"], r["recipe_name"], json.loads(r["recipe"]), r["seed"],
                            json.loads(r["settings"]), r["status"], r["initial_activation"], r["final_activation"],
                            r["activation_ratio"], r["robustness"], r["high_frequency_share"], r["file"],
                            r["array_file"], r["seconds"], r["message"])

    def render(self, render_id: int) -> RenderRecord:
        row = self._conn.execute("SELECT * FROM renders WHERE id = ?", (render_id,)).fetchone()
        if row is None:
            raise AtlasError(f"No render {render_id} in the atlas {self.path}")
        return self._render(row)

    def passes(self, layer_id: int) -> list[PassRecord]:
        rows = self._conn.execute("SELECT p.*, d.source, d.images FROM passes p JOIN datasets d ON d.id = p.dataset_id "
                                  "WHERE p.layer_id = ? ORDER BY p.id", (layer_id,))
        return [PassRecord(r["id"], r["layer_id"], r["dataset_id"], r["source"], r["images"], r["exemplars"],
                           r["status"], r["seconds"]) for r in rows]

    def latest_pass(self, layer_id: int) -> PassRecord | None:
        done = [p for p in self.passes(layer_id) if p.status == "done"]
        return done[-1] if done else None

    def unit(self, layer: str, unit: int, model: str | None = None) -> UnitRecord:
        """Everything about one unit: its renders, exemplars (from the latest finished pass) and statistics.

        Raises:
            AtlasError: no such model, layer or unit in the atlas.
        """
        model_record = self.model(model)
        layer_record = self.layer(model_record, layer)
        if not 0 <= unit < layer_record.channels:
            raise AtlasError(f"Unit {unit} is out of range for layer {layer} of {model_record.name}, which has "
                             f"{layer_record.channels} units (0-{layer_record.channels - 1})")
        renders = self.renders(layer_record.id, unit)
        found = self.latest_pass(layer_record.id)
        exemplars: dict[str, list[ExemplarRecord]] = {}
        stats = None
        if found is not None:
            rows = self._conn.execute(
                "SELECT e.id, e.kind, e.rank, e.image, e.value, e.y, e.x, e.box, e.source_box, e.crop IS NOT NULL AS "
                "has_crop, d.path FROM exemplars e JOIN dataset_images d ON d.dataset_id = ? AND d.idx = e.image "
                "WHERE e.pass_id = ? AND e.unit = ? ORDER BY e.kind, e.rank", (found.dataset_id, found.id, unit))
            for r in rows:
                exemplars.setdefault(r["kind"], []).append(ExemplarRecord(
                    r["id"], r["kind"], r["rank"], r["image"], r["path"], r["value"], r["y"], r["x"],
                    json.loads(r["box"]), json.loads(r["source_box"]), bool(r["has_crop"])))
            s = self._conn.execute("SELECT * FROM unit_stats WHERE pass_id = ? AND unit = ?",
                                   (found.id, unit)).fetchone()
            if s is not None:
                stats = UnitStats(s["mean"], s["std"], s["max"], s["min"], s["fraction_positive"], s["images"],
                                  json.loads(s["histogram"]))
        return UnitRecord(model_record.name, layer_record.name, unit, layer_record.channels, renders, exemplars, stats,
                          found.dataset_source if found else None)

    def exemplar_image(self, exemplar_id: int, thumbnail: bool = False) -> bytes:
        """The JPEG crop (or thumbnail) of an exemplar."""
        column = "thumbnail" if thumbnail else "crop"
        row = self._conn.execute(f"SELECT {column} FROM exemplars WHERE id = ?", (exemplar_id,)).fetchone()
        if row is None or row[0] is None:
            raise AtlasError(f"No {'thumbnail' if thumbnail else 'crop'} for exemplar {exemplar_id} in {self.path}")
        return bytes(row[0])

    def layer_summary(self, layer_id: int) -> list[dict[str, Any]]:
        """One row per unit of a layer: its first finished render (id, status, final activation, scores),
        its statistics from the latest pass and its top exemplar with a crop (id), for grids and sorting
        (units without any of them included)."""
        channels = self._conn.execute("SELECT channels FROM layers WHERE id = ?", (layer_id,)).fetchone()
        if channels is None:
            raise AtlasError(f"No layer {layer_id} in the atlas {self.path}")
        rows: list[dict[str, Any]] = [{"unit": u, "render": None, "status": None, "final_activation": None,
                                       "robustness": None, "max": None, "fraction_positive": None, "exemplar": None}
                                      for u in range(int(channels[0]))]
        for r in self._conn.execute("SELECT id, unit, status, final_activation, robustness FROM renders WHERE "
                                    "layer_id = ? AND status != 'pending' ORDER BY id DESC", (layer_id,)):
            if r["status"] in ("ok", "inactive") or rows[r["unit"]]["render"] is None:
                rows[r["unit"]].update(render=r["id"] if r["status"] != "failed" else None, status=r["status"],
                                       final_activation=r["final_activation"], robustness=r["robustness"])
        found = self.latest_pass(layer_id)
        if found is not None:
            for s in self._conn.execute("SELECT unit, max, fraction_positive FROM unit_stats WHERE pass_id = ?",
                                        (found.id,)):
                rows[s["unit"]].update(max=s["max"], fraction_positive=s["fraction_positive"])
            for e in self._conn.execute("SELECT id, unit FROM exemplars WHERE pass_id = ? AND kind = 'max' AND "
                                        "rank = 0 AND crop IS NOT NULL", (found.id,)):
                rows[e["unit"]]["exemplar"] = e["id"]
        return rows

    def most_used_recipe(self, model_id: int) -> dict[str, Any] | None:
        """The recipe (as a dict) of the most renders of a model, pending ones aside; ``None`` when none."""
        row = self._conn.execute(
            "SELECT r.recipe FROM renders r JOIN layers l ON l.id = r.layer_id WHERE l.model_id = ? AND "
            "r.status != 'pending' GROUP BY r.recipe ORDER BY COUNT(*) DESC, MIN(r.id) LIMIT 1", (model_id,)).fetchone()
        return json.loads(row[0]) if row is not None else None

    def render_counts(self, layer_id: int) -> dict[str, int]:
        """Renders of a layer by status."""
        return {r[0]: int(r[1]) for r in self._conn.execute(
            "SELECT status, COUNT(DISTINCT unit) FROM renders WHERE layer_id = ? GROUP BY status", (layer_id,))}

    def exemplar(self, exemplar_id: int) -> tuple[ExemplarRecord, int, int]:
        """An exemplar with the pass's layer id and the unit it belongs to."""
        r = self._conn.execute(
            "SELECT e.*, e.crop IS NOT NULL AS has_crop, d.path, p.layer_id FROM exemplars e JOIN passes p ON "
            "p.id = e.pass_id JOIN dataset_images d ON d.dataset_id = p.dataset_id AND d.idx = e.image "
            "WHERE e.id = ?", (exemplar_id,)).fetchone()
        if r is None:
            raise AtlasError(f"No exemplar {exemplar_id} in the atlas {self.path}")
        record = ExemplarRecord(r["id"], r["kind"], r["rank"], r["image"], r["path"], r["value"], r["y"], r["x"],
                                json.loads(r["box"]), json.loads(r["source_box"]), bool(r["has_crop"]))
        return record, int(r["layer_id"]), int(r["unit"])

    def status(self) -> list[StatusRow]:
        """Renders per model, layer, recipe and seed: done (ok), inactive, failed, pending."""
        rows = self._conn.execute(
            "SELECT m.name AS model, l.name AS layer, r.recipe_name, r.seed, "
            "SUM(r.status = 'ok') AS ok, SUM(r.status = 'inactive') AS inactive, SUM(r.status = 'failed') AS failed, "
            "SUM(r.status = 'pending') AS pending FROM renders r JOIN layers l ON l.id = r.layer_id "
            "JOIN models m ON m.id = l.model_id GROUP BY m.id, l.id, r.recipe, r.recipe_name, r.seed "
            "ORDER BY m.id, l.id, MIN(r.id), r.seed")
        return [StatusRow(r["model"], r["layer"], r["recipe_name"], r["seed"], r["ok"], r["inactive"], r["failed"],
                          r["pending"]) for r in rows]

    def crops_done(self, pass_id: int) -> int:
        """How many units of a pass have their exemplar crops."""
        row = self._conn.execute("SELECT COUNT(DISTINCT unit) FROM exemplars WHERE pass_id = ? AND crop IS NOT NULL",
                                 (pass_id,)).fetchone()
        return int(row[0])

    def matrix(self, pass_id: int, which: str = "means") -> np.ndarray:
        """The images x units matrix of a finished pass (``means`` or ``maxima``), memory-mapped."""
        row = self._conn.execute(f"SELECT {'means_file' if which == 'means' else 'maxima_file'} FROM passes "
                                 "WHERE id = ? AND status = 'done'", (pass_id,)).fetchone()
        if row is None or row[0] is None:
            raise AtlasError(f"No finished pass {pass_id} in the atlas {self.path}")
        return np.load(self.path / row[0], mmap_mode="r")

    def cofiring(self, layer: str, unit: int, k: int = 8, model: str | None = None) -> list[tuple[int, float]]:
        """The ``k`` (at most 16) units of the same layer whose per-image mean activations correlate most with
        ``unit``'s over the dataset of the latest pass (Pearson), as ``(unit, correlation)``, strongest first;
        computed when the pass finished (:func:`~filterscope.atlas.exemplars.cofiring`)."""
        model_record = self.model(model)
        layer_record = self.layer(model_record, layer)
        found = self.latest_pass(layer_record.id)
        if found is None:
            return []
        row = self._conn.execute("SELECT cofiring FROM unit_stats WHERE pass_id = ? AND unit = ?",
                                 (found.id, unit)).fetchone()
        return [(int(u), float(c)) for u, c in json.loads(row[0])[:k]] if row is not None else []
