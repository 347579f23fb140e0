"""``filterscope atlas check``: find what in an atlas folder no longer matches its records, and mark it for the
next build to redo.

What is checked, against what the atlas recorded when it wrote each thing:

* the database itself (SQLite's ``PRAGMA integrity_check``);
* every file a record names (renders and their arrays, the exemplar pass's ``activations/`` matrices, circuits'
  expanded weights, activation atlases' samples, layouts and icons): present, and of the size and SHA-256 in the
  ``files`` table (schema 6; for files written before it, present and non-empty);
* every exemplar crop and thumbnail (JPEG blobs in the database): decodable.

Each problem is one :class:`Problem`, a line naming the file or record and what is wrong. :func:`repair` then
turns each into work the next ``atlas build`` (or ``atlas map``) does, and only that: a damaged render goes back
to ``pending``; a damaged pass (a matrix or an exemplar image) to ``pending``, so the pass is run again; a
damaged circuit pair, map or samples file loses its record, so it is computed again; a damaged icon is cleared,
so only that icon is rendered again. Damaged files are removed after the repair is committed, so nothing keeps
pointing at them. A repair holds the build lock: it never runs beside a build.

SQLite offers the integrity check and transactions; the file side has no library (the atlas's own layout and
records are what is compared), hence this module.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..files import OutputLock
from .build import LOCK_NAME
from .schema import transaction
from .store import AtlasStore
from .writes import file_digest

__all__ = ["Problem", "check_atlas", "repair"]


@dataclass(frozen=True)
class Problem:
    """One thing that no longer matches its record.

    Attributes:
        what: The record, in words (``render of _blocks.15 unit 3``).
        path: The file (in the atlas folder), or ``None`` for a problem inside the database.
        detail: What is wrong (``missing``, ``truncated: 120 of 5,321 bytes``, ...).
        kind: What a repair does: ``render``, ``pass``, ``circuit``, ``samples``, ``map``, ``icon``, or ``database``
            (nothing: restore the folder from a copy).
        key: The record's id(s) for the repair.
    """

    what: str
    path: str | None
    detail: str
    kind: str
    key: tuple[int, ...]

    def line(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return f"{self.what}{where}: {self.detail}"


def check_atlas(store: AtlasStore) -> list[Problem]:
    """Every :class:`Problem` of the atlas open in ``store`` (see the module docstring); empty when sound."""
    integrity = store.integrity_check()
    if integrity != "ok":
        return [Problem("the atlas database", None, f"fails SQLite's integrity check ({integrity})", "database", ())]
    conn = store._conn
    recorded = {row["path"]: (row["size"], row["sha256"]) for row in conn.execute("SELECT * FROM files")}
    problems = []
    for what, path, kind, key in _named_files(store):
        detail = _file_problem(store.path, path, recorded.get(path))
        if detail:
            problems.append(Problem(what, path, detail, kind, key))
    problems += _blob_problems(store)
    return problems


def _named_files(store: AtlasStore) -> Iterator[tuple[str, str, str, tuple[int, ...]]]:
    """``(what, path, kind, key)`` for every file a record names."""
    conn = store._conn
    for r in conn.execute("SELECT r.id, r.unit, r.recipe_name, r.seed, r.file, r.array_file, l.name FROM renders r "
                          "JOIN layers l ON l.id = r.layer_id WHERE r.status != 'pending' ORDER BY r.id"):
        what = f"render of {r['name']} unit {r['unit']} ({r['recipe_name']}, seed {r['seed']})"
        for path in (r["file"], r["array_file"]):
            if path:
                yield what, path, "render", (r["id"],)
    for p in conn.execute("SELECT p.id, p.means_file, p.maxima_file, l.name FROM passes p JOIN layers l "
                          "ON l.id = p.layer_id WHERE p.status = 'done' ORDER BY p.id"):
        for path in (p["means_file"], p["maxima_file"]):
            if path:
                yield f"exemplar pass {p['id']} of {p['name']}", path, "pass", (p["id"],)
    for c in conn.execute("SELECT c.id, c.file, a.name AS a, b.name AS b FROM circuit_pairs c JOIN layers a "
                          "ON a.id = c.source_layer_id JOIN layers b ON b.id = c.target_layer_id ORDER BY c.id"):
        yield f"circuit {c['a']} → {c['b']}", c["file"], "circuit", (c["id"],)
    yield from _map_files(store)


def _map_files(store: AtlasStore) -> Iterator[tuple[str, str, str, tuple[int, ...]]]:
    conn = store._conn
    for s in conn.execute("SELECT * FROM map_samples ORDER BY id"):
        for column in ("vectors_file", "places_file", "classes_file", "attributions_file"):
            yield f"activation atlas samples {s['id']}", s[column], "samples", (s["id"],)
    for m in conn.execute("SELECT * FROM maps ORDER BY id"):
        for column in ("layout_file", "cells_file", "means_file"):
            yield f"activation atlas {m['id']}", m[column], "map", (m["id"],)
    for c in conn.execute("SELECT map_id, cell, file FROM map_cells WHERE file IS NOT NULL ORDER BY map_id, cell"):
        yield f"icon of cell {c['cell']} of activation atlas {c['map_id']}", c["file"], "icon", (c["map_id"], c["cell"])


def _file_problem(root: Path, path: str, recorded: tuple[int, str] | None) -> str | None:
    """What is wrong with the file at ``path`` against its recorded size and hash; ``None`` when nothing."""
    file = root / path
    if not file.is_file():
        return "missing"
    if recorded is None:  # written before schema 6: only its presence and size can be checked
        return "empty" if file.stat().st_size == 0 else None
    size, digest = file_digest(file)
    if size != recorded[0]:
        return f"{'truncated' if size < recorded[0] else 'grown'}: {size:,} of {recorded[0]:,} bytes"
    if digest != recorded[1]:
        return "replaced: same size, other contents"
    return None


def _blob_problems(store: AtlasStore) -> list[Problem]:
    problems = []
    rows = store._conn.execute("SELECT e.id, e.pass_id, e.unit, e.kind, e.rank, e.crop, e.thumbnail, l.name FROM "
                               "exemplars e JOIN passes p ON p.id = e.pass_id JOIN layers l ON l.id = p.layer_id "
                               "WHERE p.status = 'done' AND (e.crop IS NOT NULL OR e.thumbnail IS NOT NULL) "
                               "ORDER BY e.id")
    for e in rows:
        for column in ("crop", "thumbnail"):
            if e[column] is not None and not _decodes(e[column]):
                problems.append(Problem(f"exemplar {e['kind']} #{e['rank'] + 1} of {e['name']} unit {e['unit']}", None,
                                        f"its {column} is not a readable image", "pass", (e["pass_id"],)))
    return problems


def _decodes(blob: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(blob)) as image:
            image.load()
    except (OSError, SyntaxError, ValueError):
        return False
    return True


def repair(store: AtlasStore, problems: list[Problem]) -> dict[str, int]:
    """Mark what ``problems`` name for the next build to redo (see the module docstring), in one transaction
    under the build lock, then remove the damaged files; how many records of each kind were marked."""
    marked: dict[str, set[tuple[int, ...]]] = {}
    for problem in problems:
        if problem.kind != "database":
            marked.setdefault(problem.kind, set()).add(problem.key)
    with OutputLock(store.path, name=LOCK_NAME), transaction(store._conn) as conn:
        for (render_id,) in marked.get("render", ()):
            conn.execute("UPDATE renders SET status = 'pending', file = NULL, array_file = NULL, finished = NULL, "
                         "initial_activation = NULL, final_activation = NULL, activation_ratio = NULL, "
                         "robustness = NULL, high_frequency_share = NULL, message = NULL WHERE id = ?", (render_id,))
        for (pass_id,) in marked.get("pass", ()):
            conn.execute("UPDATE passes SET status = 'pending' WHERE id = ?", (pass_id,))
        for (pair_id,) in marked.get("circuit", ()):
            conn.execute("DELETE FROM circuit_pairs WHERE id = ?", (pair_id,))
        maps = {key[0] for key in marked.get("map", ())}
        for (samples_id,) in marked.get("samples", ()):
            maps |= {row[0] for row in conn.execute("SELECT id FROM maps WHERE samples_id = ?", (samples_id,))}
        for map_id in maps:
            conn.execute("DELETE FROM map_cells WHERE map_id = ?", (map_id,))
            conn.execute("DELETE FROM maps WHERE id = ?", (map_id,))
        for (samples_id,) in marked.get("samples", ()):
            conn.execute("DELETE FROM map_samples WHERE id = ?", (samples_id,))
        for map_id, cell in marked.get("icon", ()):
            conn.execute("UPDATE map_cells SET file = NULL, status = NULL, finished = NULL WHERE map_id = ? AND "
                         "cell = ?", (map_id, cell))
        conn.executemany("DELETE FROM files WHERE path = ?", [(p.path,) for p in problems if p.path])
    for problem in problems:
        if problem.path:
            (store.path / problem.path).unlink(missing_ok=True)
    return {kind: len(keys) for kind, keys in marked.items()}
