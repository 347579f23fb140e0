"""A disk that fills up mid-run (a small tmpfs mounted by the test, as root): one line naming the folder and the
space, exit 1, a sound database whose records all point to whole files, no temporary file; once space is freed
the same command finishes and redoes nothing finished."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import filterscope as fs
from filterscope.atlas.check import check_atlas
from filterscope.cli import app as cli

from ..helpers.atlases import write_images

runner = CliRunner()
RENDER = ["-m", "resnet18", "-w", "random", "-l", "layer1.0.conv1", "--size", "64", "--scales", "1", "--steps", "2",
          "--batch-size", "8", "-q"]


@pytest.fixture
def small_disk(tmp_path) -> Iterator[tuple[Path, Callable[[str], None]]]:
    """A tmpfs of 512 KiB at ``tmp_path/disk``, and a function that resizes it (``"8m"``); unmounted after."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], capture_output=True,
                             text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs ({mounted.stderr.strip()})")

    def resize(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)

    try:
        yield disk, resize
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _full(result) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output  # (visualize lists finished files)
    assert errors[0].startswith("error: No space left on the device of ") and " free" in errors[0]
    assert "run the same command again" in errors[0]
    return errors[0]


def _sound(out: Path) -> int:
    """The atlas's database passes its integrity check, every record names a whole file, no temporary file."""
    with sqlite3.connect(out / "atlas.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with fs.atlas.AtlasStore(out, create=False) as store:
        assert check_atlas(store) == []
        done = store.status()
    assert not list(out.rglob("*.part"))
    return sum(r.done for r in done)


@pytest.mark.integration
def test_atlas_build_on_a_full_disk_stops_cleanly_and_finishes_once_space_is_freed(small_disk):
    disk, resize = small_disk
    out = disk / "atlas"
    command = ["atlas", "build", str(out), *RENDER, "--no-scores", "--units", "0-63"]
    line = _full(runner.invoke(cli, command))
    assert str(out) in line
    finished = _sound(out)
    assert 0 < finished < 64
    resize("8m")
    again = runner.invoke(cli, command)
    assert again.exit_code == 0, again.output
    assert f"{64 - finished} render(s) done, {finished} already in the atlas" in again.output
    assert _sound(out) == 64


@pytest.mark.integration
@pytest.mark.parametrize("free", [150, 512])  # KiB left for the atlas: full while creating it; at the pass's records
def test_an_exemplar_pass_on_a_full_disk_stops_cleanly_and_finishes_once_space_is_freed(small_disk, tmp_path, free):
    disk, resize = small_disk
    write_images(tmp_path / "data", 40, size=64)
    out = disk / "atlas"
    command = ["atlas", "build", str(out), "-m", "resnet18", "-w", "random", "-l", "layer1.0.conv1",
               "--recipe", "none", "--no-circuits", "--no-trust",  # the pass and its crops: what a full disk breaks
               "--dataset", str(tmp_path / "data"), "--exemplars", "2", "-q"]
    ballast = disk / "ballast"
    if free < 512:
        ballast.write_bytes(b"\0" * ((512 - free) << 10))
    _full(runner.invoke(cli, command))
    with sqlite3.connect(out / "atlas.sqlite") as conn:  # (with 150 KiB even its schema did not fit)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ballast.unlink(missing_ok=True)
    resize("64m")  # its exemplar crops take a few MiB
    again = runner.invoke(cli, command)
    assert again.exit_code == 0, again.output
    _sound(out)
    with fs.Atlas(out, create=False) as atlas:
        unit = atlas.unit("layer1.0.conv1", 5)
        assert len(unit.exemplars["max"]) == 2 and all(e.has_crop for e in unit.exemplars["max"])


@pytest.mark.integration
def test_visualize_on_a_full_disk_stops_cleanly_and_finishes_once_space_is_freed(small_disk):
    disk, resize = small_disk
    out = disk / "filters"
    command = ["visualize", *RENDER, "-f", "0-63", "-o", str(out)]
    line = _full(runner.invoke(cli, command))
    assert str(out) in line
    written = sorted(p.name for p in out.glob("*.png"))
    assert written and not list(out.glob(".*.part"))
    kept = {name: (out / name).read_bytes() for name in written}
    resize("8m")
    again = runner.invoke(cli, command)
    assert again.exit_code == 0, again.output
    assert len(list(out.glob("*-f*.png"))) == 64
    assert all((out / name).read_bytes() == data for name, data in kept.items())  # not redone
