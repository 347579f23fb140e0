"""A damaged atlas (filterscope atlas check [--repair]): each damage found against the recorded sizes and hashes, one
line each; a repair makes the next build redo exactly what was damaged; the microscope answers 404 for a damaged
file meanwhile."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import filterscope as fs
from filterscope.cli import app as cli
from filterscope.microscope import create_app

from ..helpers.atlases import TINY_RECIPE, conv_stack, write_images

runner = CliRunner()


def _build(out: Path, data: Path) -> fs.atlas.BuildSummary:
    return fs.build_atlas(out, conv_stack(), ["6", "4"], units={"4": [0, 1, 2, 3], "6": [0]}, recipes=[TINY_RECIPE],
                          dataset=data, exemplars=3)


def _renders(out: Path) -> dict[tuple[str, int], tuple[int, str]]:
    with sqlite3.connect(out / "atlas.sqlite") as conn:
        rows = conn.execute("SELECT l.name, r.unit, r.id, r.file FROM renders r JOIN layers l ON l.id = r.layer_id "
                            "WHERE r.file IS NOT NULL").fetchall()
    return {(layer, unit): (render_id, file) for layer, unit, render_id, file in rows}


def _check(out: Path, *extra: str):
    return runner.invoke(cli, ["atlas", "check", str(out), *extra])


@pytest.mark.integration
def test_check_finds_every_damage_and_a_repair_redoes_exactly_it(tmp_path):
    write_images(tmp_path / "data", 8)
    out = tmp_path / "atlas"
    _build(out, tmp_path / "data")
    sound = _check(out)
    assert sound.exit_code == 0 and "is sound" in sound.output and "recorded file(s) match" in sound.output
    renders = _renders(out)
    untouched = (out / renders[("4", 3)][1]).read_bytes()

    (out / renders[("4", 0)][1]).unlink()  # deleted
    damaged = out / renders[("4", 1)][1]
    damaged.write_bytes(damaged.read_bytes()[:100])  # truncated
    shutil.copyfile(out / renders[("6", 0)][1], out / renders[("4", 2)][1])  # replaced by another render
    flipped = out / renders[("6", 0)][1]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))  # same size, other contents
    with sqlite3.connect(out / "atlas.sqlite") as conn:
        conn.execute("UPDATE exemplars SET thumbnail = X'00FF00' WHERE id = (SELECT MIN(id) FROM exemplars "
                     "WHERE thumbnail IS NOT NULL)")  # a corrupted blob
    shutil.rmtree(out / "activations")  # the passes' matrices
    for circuit in (out / "circuits").rglob("*.npy"):
        circuit.unlink()

    client = TestClient(create_app(out))
    assert client.get(f"/img/render/{renders[('4', 1)][0]}").status_code == 404  # truncated: not served
    assert client.get(f"/img/render/{renders[('6', 0)][0]}").status_code == 404  # altered: not served
    assert client.get(f"/img/render/{renders[('4', 3)][0]}").status_code == 200
    assert client.get("/m/stack/4/1").status_code == 200  # the unit page still shows

    found = _check(out)
    assert found.exit_code == 1
    lines = found.output.strip().splitlines()
    assert "problem(s) in" in lines[-1] and "--repair" in lines[-1]
    problems = lines[:-1]
    assert sum("render of 4 unit 0" in line and line.endswith(": missing") for line in problems) == 1
    assert sum("render of 4 unit 1" in line and ": truncated: 100 of" in line for line in problems) == 1
    assert sum("render of 4 unit 2" in line and (": truncated" in line or ": grown" in line) for line in problems) == 1
    assert sum("render of 6 unit 0" in line and "replaced: same size" in line for line in problems) == 1
    assert sum("its thumbnail is not a readable image" in line for line in problems) == 1
    assert sum("exemplar pass" in line and "activations/" in line and "missing" in line for line in problems) == 4
    assert sum(line.startswith("circuit ") and line.endswith(": missing") for line in problems) == 1
    assert len(problems) == 10 and not any("unit 3" in line for line in problems)

    repaired = _check(out, "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "1 circuit pair(s) to compute again, 2 exemplar pass(es) to run again, 4 render(s) back to pending" \
        in repaired.output
    assert _check(out).exit_code == 0  # nothing points at a damaged file any more
    again = _build(out, tmp_path / "data")
    assert again.rendered == 4 and again.passes == 2 and not again.failed
    assert (out / renders[("4", 3)][1]).read_bytes() == untouched  # what was whole is not redone
    after = _check(out)
    assert after.exit_code == 0 and "is sound" in after.output
    assert client.get(f"/img/render/{_renders(out)[('4', 1)][0]}").status_code == 200


def test_a_damaged_database_is_reported_not_repaired(tmp_path):
    out = tmp_path / "atlas"
    fs.build_atlas(out, conv_stack(), "4", units=[0, 1], recipes=[TINY_RECIPE], scores=False)
    with sqlite3.connect(out / "atlas.sqlite") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    before = {p.name: p.read_bytes() for p in (out / "renders").rglob("*.png")}
    with (out / "atlas.sqlite").open("r+b") as f:  # garbage over every page but the header's
        for number in range(1, pages):
            f.seek(number * page + 16)
            f.write(b"\xde\xad" * 64)
    for flag in ((), ("--repair",)):
        result = _check(out, *flag)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "integrity check" in result.output or "not a readable atlas database" in result.output
    assert {p.name: p.read_bytes() for p in (out / "renders").rglob("*.png")} == before  # nothing removed
    missing = _check(tmp_path / "nothing")
    assert missing.exit_code == 1 and "No atlas in" in missing.output
