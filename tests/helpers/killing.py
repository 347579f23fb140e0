"""Kill an ``atlas build`` child process after its first committed render, then run it again: the check
that a killed build loses nothing and redoes nothing (used for local and cluster builds)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from PIL import Image


def _query(database: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def kill_after_first_unit_then_resume(command: list[str], out: Path, units: int, timeout: float = 180) -> int:
    """Run ``command`` (an ``atlas build`` into ``out`` of ``units`` renders), SIGKILL it once a render is
    committed, run it again, and check: every unit exactly once and ``ok``, the files finished before the
    kill byte-identical, the database sound, no temporary files, every PNG whole. Returns how many renders
    were finished when it was killed."""
    database = out / "atlas.sqlite"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    finished = 0
    while time.monotonic() < deadline and process.poll() is None and finished < 1:
        try:
            finished = _query(database, "SELECT COUNT(*) FROM renders WHERE status = 'ok'")[0][0]
        except sqlite3.Error:
            finished = 0
        time.sleep(0.05)
    assert process.poll() is None, "the build ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
    before = dict(_query(database, "SELECT key, file FROM renders WHERE status = 'ok'"))
    assert 1 <= len(before) < units
    kept = {key: (out / file).read_bytes() for key, file in before.items()}
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"{units - len(before)} render(s) done, {len(before)} already in the atlas" in second.stdout
    rows = _query(database, "SELECT unit, status FROM renders")
    assert _query(database, "PRAGMA integrity_check")[0][0] == "ok"
    assert sorted(r[0] for r in rows) == list(range(units)) and {r[1] for r in rows} == {"ok"}
    assert all((out / file).read_bytes() == kept[key] for key, file in before.items())
    files = sorted((out / "renders").rglob("*.png"))
    assert len(files) == units and not list(out.rglob("*.part"))
    for path in files:
        with Image.open(path) as image:
            image.load()
    return len(before)
