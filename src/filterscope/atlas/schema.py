"""The atlas database's schema, its versions and migrations, and how a connection is opened.

The schema is versioned with ``PRAGMA user_version``. A writer (a build, ``atlas status``) brings an older
atlas up to :data:`SCHEMA_VERSION` with :data:`MIGRATIONS`, each in its own transaction; a read-only
connection (the microscope) reads any version from :data:`READABLE_FROM` on, since every migration so far
only adds what the read side can do without (it reads a missing column as ``NULL``). An atlas written by
a newer filterscope is refused with a message saying so.

Queries live in :mod:`.reads` and :mod:`.writes`; this module only creates, checks and upgrades.
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .._version import __version__
from ..errors import AtlasError
from ..files import no_space

__all__ = ["DB_NAME", "FORMAT", "SCHEMA", "RENDERS_TABLE", "CIRCUIT_TABLES", "TRUST_TABLES", "MAP_TABLES",
           "FILES_TABLE", "SCHEMA_VERSION", "MIGRATIONS", "READABLE_FROM", "connect", "transaction", "disk_full", "now"]

DB_NAME = "atlas.sqlite"
FORMAT = "filterscope-atlas"
SCHEMA_VERSION = 6
READABLE_FROM = 1
"""The oldest schema a read-only connection reads without upgrading it."""

RENDERS_TABLE = """
CREATE TABLE {name} (
    id INTEGER PRIMARY KEY, layer_id INTEGER NOT NULL REFERENCES layers(id), unit INTEGER NOT NULL,
    objective TEXT NOT NULL, recipe_name TEXT NOT NULL, recipe TEXT NOT NULL, seed INTEGER NOT NULL,
    settings TEXT NOT NULL, key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('pending', 'ok', 'inactive', 'not-improved', 'failed')),
    initial_activation REAL, final_activation REAL, activation_ratio REAL, robustness REAL,
    high_frequency_share REAL, file TEXT, array_file TEXT, seconds REAL, message TEXT, finished TEXT);
"""
"""The renders (a ``{name}`` to fill in): one row per render key, with its status and scores."""

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE models (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, weights TEXT NOT NULL, weights_hash TEXT NOT NULL,
    source TEXT, preprocessing TEXT NOT NULL, created TEXT NOT NULL, weights_source TEXT,
    UNIQUE (name, weights_hash));
CREATE TABLE layers (
    id INTEGER PRIMARY KEY, model_id INTEGER NOT NULL REFERENCES models(id), name TEXT NOT NULL,
    channels INTEGER NOT NULL, shape TEXT NOT NULL, receptive_field TEXT, UNIQUE (model_id, name));
{renders}
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

CIRCUIT_TABLES = """
CREATE TABLE circuit_pairs (
    id INTEGER PRIMARY KEY, source_layer_id INTEGER NOT NULL REFERENCES layers(id),
    target_layer_id INTEGER NOT NULL REFERENCES layers(id), kernel TEXT NOT NULL, file TEXT NOT NULL,
    sha256 TEXT NOT NULL, seconds REAL, finished TEXT NOT NULL, UNIQUE (source_layer_id, target_layer_id));
CREATE TABLE unit_circuits (
    layer_id INTEGER NOT NULL REFERENCES layers(id), unit INTEGER NOT NULL,
    section TEXT NOT NULL CHECK (section IN ('inputs', 'outputs', 'classes')), data TEXT NOT NULL,
    PRIMARY KEY (layer_id, unit, section));
"""
"""Circuits (schema 3): the expanded weights of each layer pair (an ``.npy`` file and its hash), and each unit's
inputs, outputs and classes as JSON."""
SCHEMA += CIRCUIT_TABLES

TRUST_TABLES = """
CREATE TABLE unit_trust (
    layer_id INTEGER NOT NULL REFERENCES layers(id), unit INTEGER NOT NULL, data TEXT NOT NULL,
    finished TEXT NOT NULL, PRIMARY KEY (layer_id, unit));
"""
"""Trust (schema 4): each unit's faithfulness scores and description as JSON
(:class:`~filterscope.trust.UnitTrust`)."""
SCHEMA = SCHEMA.replace("{renders}", RENDERS_TABLE.format(name="renders").strip()
                        + "\nCREATE INDEX renders_by_unit ON renders (layer_id, unit);") + TRUST_TABLES

MAP_TABLES = """
CREATE TABLE map_samples (
    id INTEGER PRIMARY KEY, pass_id INTEGER NOT NULL REFERENCES passes(id),
    positions TEXT NOT NULL CHECK (positions IN ('random', 'all')), seed INTEGER NOT NULL, count INTEGER NOT NULL,
    vectors_file TEXT NOT NULL, places_file TEXT NOT NULL, classes_file TEXT NOT NULL,
    attributions_file TEXT NOT NULL, finished TEXT NOT NULL, UNIQUE (pass_id, positions, seed));
CREATE TABLE maps (
    id INTEGER PRIMARY KEY, samples_id INTEGER NOT NULL REFERENCES map_samples(id), key TEXT NOT NULL UNIQUE,
    settings TEXT NOT NULL, layout_file TEXT NOT NULL, cells_file TEXT NOT NULL, means_file TEXT NOT NULL,
    trustworthiness REAL, seconds REAL, finished TEXT NOT NULL);
CREATE TABLE map_cells (
    map_id INTEGER NOT NULL REFERENCES maps(id), cell INTEGER NOT NULL, row INTEGER NOT NULL, col INTEGER NOT NULL,
    count INTEGER NOT NULL, label INTEGER, label_name TEXT, label_share REAL, key TEXT NOT NULL, file TEXT,
    status TEXT, initial REAL, final REAL, cosine REAL, finished TEXT, PRIMARY KEY (map_id, cell));
"""
"""Activation atlases (schema 5): the samples a pass collected (``.npy`` files: vectors, places, top classes and
their attributions), each map's layout and cells (``.npy``: coordinates, each sample's cell, the cells' mean
vectors) and its cells with their label and icon."""
SCHEMA += MAP_TABLES

FILES_TABLE = """
CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, sha256 TEXT NOT NULL, recorded TEXT NOT NULL);
"""
"""Every file the atlas writes (schema 6), by its path in the atlas folder: its size and SHA-256, recorded in the
transaction of the record that names it, so that ``filterscope atlas check`` finds a file deleted, truncated or
replaced since."""
SCHEMA += FILES_TABLE

_RENDERS_V4 = (RENDERS_TABLE.format(name="renders_v4").strip().rstrip(";")
               + "; INSERT INTO renders_v4 SELECT * FROM renders; DROP TABLE renders; "
               "ALTER TABLE renders_v4 RENAME TO renders; CREATE INDEX renders_by_unit ON renders (layer_id, unit); "
               + TRUST_TABLES.strip().rstrip(";"))
"""Schema 4: the renders' status may be ``not-improved`` (SQLite changes a CHECK only by rebuilding the table;
nothing references it), and the trust table."""

MIGRATIONS: dict[int, str] = {
    2: "ALTER TABLE models ADD COLUMN weights_source TEXT",  # where the weights came from, as JSON (WeightsSource)
    3: CIRCUIT_TABLES.strip().rstrip(";"),
    4: _RENDERS_V4,
    5: MAP_TABLES.strip().rstrip(";"),
    6: FILES_TABLE.strip().rstrip(";"),
}
"""SQL that brings schema ``N - 1`` to ``N``, by ``N``."""


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def connect(db_path: Path, *, create: bool, readonly: bool) -> sqlite3.Connection:
    """A connection to the atlas database at ``db_path`` (created with the schema when ``create``), checked
    to be an atlas and brought to the current schema (unless ``readonly``)."""
    uri = f"file:{db_path.resolve()}{'?mode=ro' if readonly else ''}"
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        if create or (not readonly and _empty(conn)):  # new, or a creation stopped before its commit (disk full)
            _create(conn)
        elif not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
        _check(conn, db_path, readonly)
    except BaseException as exc:
        if conn is not None:
            conn.close()  # never left holding a lock (a creation stopped halfway holds the write lock)
        if not isinstance(exc, sqlite3.DatabaseError):
            raise
        if disk_full(exc):
            raise no_space(db_path.parent) from None
        raise AtlasError(f"{db_path} is not a readable atlas database ({exc})") from None
    return conn


def _empty(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0


def _create(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode = WAL")
    schema = (SCHEMA.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS")
              .replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"))
    values = (("format", FORMAT), ("created_by", f"filterscope {__version__}"), ("created", now()))
    meta = ", ".join(f"('{k}', '{v}')" for k, v in values)
    conn.executescript(f"BEGIN IMMEDIATE; {schema} INSERT OR IGNORE INTO meta VALUES {meta}; "
                       f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")


def _check(conn: sqlite3.Connection, db_path: Path, readonly: bool) -> None:
    folder = db_path.parent
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    fmt = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone() if "meta" in tables else None
    if fmt is None or fmt[0] != FORMAT:
        raise AtlasError(f"{db_path} is an SQLite database but not a filterscope atlas")
    if version > SCHEMA_VERSION:
        raise AtlasError(f"{folder} was written by a newer filterscope (atlas schema {version}; this "
                         f"filterscope {__version__} reads up to {SCHEMA_VERSION}): upgrade filterscope")
    if version < SCHEMA_VERSION:
        if readonly:
            if version < READABLE_FROM:
                raise AtlasError(f"{folder} has atlas schema {version}: open it once with filterscope atlas "
                                 f"build or status to upgrade it to {SCHEMA_VERSION}")
            return
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.executescript(f"BEGIN IMMEDIATE; {MIGRATIONS[target]}; PRAGMA user_version = {target}; COMMIT;")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception). A full disk is
    :func:`~filterscope.files.no_space`'s one-line error naming the atlas folder (SQLite has rolled back: the
    database is as it was before the transaction)."""
    try:
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
    except sqlite3.OperationalError as exc:
        if not disk_full(exc):
            raise
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise no_space(Path(conn.execute("PRAGMA database_list").fetchone()[2]).parent) from None


def disk_full(exc: sqlite3.Error) -> bool:
    """Whether SQLite failed because the disk (or a quota) is full."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
