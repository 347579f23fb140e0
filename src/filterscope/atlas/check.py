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
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..files import OutputLock
from .build import LOCK_NAME
from .stages import stage_order
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
        kind: The stage whose records a repair invalidates (``renders``, ``exemplars``, ``circuits``,
            ``map-samples``, ``map-layout``, ``map-icons``: :meth:`~.stages.Stage.invalidate`), or ``database``
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
    with store.records() as conn:
        recorded = {row["path"]: (row["size"], row["sha256"]) for row in conn.execute("SELECT * FROM files")}
        named = [f for stage in stage_order() for f in stage.files(conn)]
    problems = []
    for f in named:
        detail = _file_problem(store.path, f.path, recorded.get(f.path))
        if detail:
            problems.append(Problem(f.what, f.path, detail, f.stage, f.key))
    problems += _blob_problems(store)
    return problems


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
    with store.records() as conn:  # one row at a time: the blobs of a large atlas need not fit in memory
        for e in conn.execute("SELECT e.id, e.pass_id, e.unit, e.kind, e.rank, e.crop, e.thumbnail, l.name FROM "
                              "exemplars e JOIN passes p ON p.id = e.pass_id JOIN layers l ON l.id = p.layer_id "
                              "WHERE p.status = 'done' AND (e.crop IS NOT NULL OR e.thumbnail IS NOT NULL) "
                              "ORDER BY e.id"):
            for column in ("crop", "thumbnail"):
                if e[column] is not None and not _decodes(e[column]):
                    problems.append(Problem(f"exemplar {e['kind']} #{e['rank'] + 1} of {e['name']} unit {e['unit']}",
                                            None, f"its {column} is not a readable image", "exemplars",
                                            (e["pass_id"],)))
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
    with OutputLock(store.path, name=LOCK_NAME), store.transaction() as conn:
        for stage in stage_order():
            if stage.name in marked:
                stage.invalidate(conn, marked[stage.name])
        conn.executemany("DELETE FROM files WHERE path = ?", [(p.path,) for p in problems if p.path])
    for problem in problems:
        if problem.path:
            (store.path / problem.path).unlink(missing_ok=True)
    return {kind: len(keys) for kind, keys in marked.items()}
