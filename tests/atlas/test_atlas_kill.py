"""kill -9 at the exemplar pass's final commit (at every stage of its transaction) and during WAL checkpoints: the
database stays sound and the next build finishes with the uninterrupted result."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import filterscope as fs
from filterscope.atlas.check import check_atlas

from ..helpers.atlases import conv_stack, write_images

ROOT = Path(__file__).resolve().parents[2]
UNITS = {"4": [0, 1, 2, 3, 4], "6": [0, 1, 2, 3]}

CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    import filterscope as fs
    from filterscope.atlas import writes
    from tests.helpers.atlases import conv_stack
    moment = int(sys.argv[1])  # the SQLite VM instruction of the pass's final transactions to be killed at; -1: count
    ticks = [0]

    def tick():
        ticks[0] += 1
        if ticks[0] == moment:
            os.kill(os.getpid(), signal.SIGKILL)
        return 0

    real = writes.AtlasWriter.finish_pass

    def finish_pass(self, *args, **kwargs):
        if moment == 0:
            os.kill(os.getpid(), signal.SIGKILL)  # the matrices renamed into place, nothing recorded
        self._conn.set_progress_handler(tick, 1)
        try:
            return real(self, *args, **kwargs)
        finally:
            self._conn.set_progress_handler(None, 1)

    writes.AtlasWriter.finish_pass = finish_pass
    fs.build_atlas(sys.argv[2], conv_stack(), ["6", "4"], units={units!r}, recipes=[], dataset=sys.argv[3],
                   exemplars=3)
    print(ticks[0])
""")


def _child(moment: int, out: Path, data: Path) -> subprocess.CompletedProcess[str]:
    code = CHILD.format(root=str(ROOT), units=UNITS)
    return subprocess.run([sys.executable, "-c", code, str(moment), str(out), str(data)], capture_output=True,
                          text=True, timeout=120, check=False)


def _pass_records(out: Path) -> tuple[list[tuple], list[tuple]]:
    with sqlite3.connect(out / "atlas.sqlite") as conn:
        exemplars = conn.execute("SELECT l.name, e.unit, e.kind, e.rank, e.image, e.value, e.y, e.x FROM exemplars e "
                                 "JOIN passes p ON p.id = e.pass_id JOIN layers l ON l.id = p.layer_id "
                                 "ORDER BY 1, 2, 3, 4").fetchall()
        stats = conn.execute("SELECT l.name, s.unit, s.mean, s.max, s.images FROM unit_stats s JOIN passes p "
                             "ON p.id = s.pass_id JOIN layers l ON l.id = p.layer_id ORDER BY 1, 2").fetchall()
    return exemplars, stats


def _build(out: Path, data: Path) -> fs.atlas.BuildSummary:
    return fs.build_atlas(out, conv_stack(), ["6", "4"], units=UNITS, recipes=[], dataset=data, exemplars=3)


@pytest.mark.integration
def test_kill_9_at_every_stage_of_the_exemplar_pass_final_commit(tmp_path):
    data = tmp_path / "data"
    write_images(data, 10)
    reference = tmp_path / "reference"
    counted = _child(-1, reference, data)
    assert counted.returncode == 0, counted.stderr
    total = int(counted.stdout.split()[-1])  # the instructions of both layers' final transactions
    expected = _pass_records(reference)
    assert total > 50 and len(expected[0]) > 9 * 3 and len(expected[1]) == 9  # 9 units, 3 exemplars per kind
    for moment in sorted({0, 1, total // 2, total - 1}):
        out = tmp_path / f"killed-{moment}"
        killed = _child(moment, out, data)
        assert killed.returncode == -signal.SIGKILL, (moment, killed.stderr[-2000:])
        with sqlite3.connect(out / "atlas.sqlite") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            done = conn.execute("SELECT COUNT(*) FROM passes WHERE status = 'done'").fetchone()[0]
        assert done < 2, moment  # killed before both were recorded
        summary = _build(out, data)
        assert summary.passes == 2 - done and not summary.failed
        assert _pass_records(out) == expected, moment  # the uninterrupted result, each exemplar once
        assert sorted(p.name for p in (out / "activations").iterdir()) == \
            sorted(p.name for p in (reference / "activations").iterdir()), moment  # no partial file left behind
        with fs.atlas.AtlasStore(out, create=False) as store:
            assert check_atlas(store) == [], moment


WRITER = textwrap.dedent("""
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    print("ready", flush=True)
    for i in range(100000):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('scratch', ?)", (str(i) * 2000,))
        conn.execute("UPDATE exemplars SET value = value")
        conn.execute("COMMIT")
        if i % 3 == 2:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
""")


@pytest.mark.integration
@pytest.mark.parametrize("delay", [0.1, 0.4])
def test_kill_9_during_wal_checkpoints_keeps_the_atlas_sound(tmp_path, delay):
    """A writer that commits and checkpoints in a loop is killed at a moment chosen by ``delay`` (each round
    spends most of its time in commits and checkpoints): integrity ok, every record there, the next build does
    nothing more than the first left."""
    data = tmp_path / "data"
    write_images(data, 6)
    out = tmp_path / "atlas"
    _build(out, data)
    expected = _pass_records(out)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(out / "atlas.sqlite")], stdout=subprocess.PIPE,
                              text=True)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    time.sleep(delay)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL  # killed mid-loop, not finished
    with sqlite3.connect(out / "atlas.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert _pass_records(out) == expected
    again = _build(out, data)
    assert again.passes == 0 and again.rendered == 0 and not again.failed
