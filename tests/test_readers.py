"""Readers during a build: the microscope serves an atlas while a build (another process) writes to it. Under a
bounded loopback load: no server error, and a unit is never seen half written (a render without its scores or
its file, statistics and exemplars of different passes)."""

from __future__ import annotations

import http.client
import json
import random
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

import filterscope as fs
from filterscope.microscope import create_app

from .helpers.atlases import TINY_RECIPE, conv_stack, write_images
from .helpers.server import Server

BUILD = ["-m", "resnet18", "-w", "random", "-l", "layer1.0.conv1", "--size", "48", "--scales", "2", "--steps", "3",
         "--batch-size", "2", "--no-scores", "-q"]


def test_reads_in_a_snapshot_see_one_state_while_a_writer_commits(tmp_path):
    out = tmp_path / "atlas"
    fs.build_atlas(out, conv_stack(), "4", units=[0, 1], recipes=[TINY_RECIPE], scores=False)
    with fs.atlas.AtlasStore(out, create=False, readonly=True) as reader, sqlite3.connect(out / "atlas.sqlite") as w:
        with reader.snapshot():
            first = reader.unit("4", 0).renders[0].final_activation
            w.execute("UPDATE renders SET final_activation = 99.0 WHERE unit = 0")
            w.commit()
            assert reader.unit("4", 0).renders[0].final_activation == first != 99.0  # still the snapshot's state
        assert reader.unit("4", 0).renders[0].final_activation == 99.0  # a new read sees the commit


def _get(connection: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read()


def _check_unit(connection: http.client.HTTPConnection, data: dict, problems: list[str]) -> None:
    for render in data["renders"]:
        if render["status"] == "ok":
            if render["final_activation"] is None or render["image"] is None:
                problems.append(f"unit {data['unit']}: a finished render without its scores or image: {render}")
            elif _get(connection, render["image"])[0] != 200:
                problems.append(f"unit {data['unit']}: its render image is not served")
    counts = {kind: len(items) for kind, items in data["exemplars"].items()}
    if counts and (data["stats"] is None or len(set(counts.values())) != 1):
        problems.append(f"unit {data['unit']}: exemplars {counts} with statistics {data['stats']}")


@pytest.mark.integration
def test_the_microscope_under_load_during_a_build_never_errs_nor_shows_a_half_written_unit(tmp_path):
    write_images(tmp_path / "data", 24, size=48)
    out = tmp_path / "atlas"
    first = subprocess.run([sys.executable, "-m", "filterscope", "atlas", "build", str(out), *BUILD, "--units", "0-1"],
                           capture_output=True, text=True, timeout=300, check=False)
    assert first.returncode == 0, first.stderr
    build = subprocess.Popen([sys.executable, "-m", "filterscope", "atlas", "build", str(out), *BUILD, "--units",
                              "0-31", "--dataset", str(tmp_path / "data"), "--exemplars", "3",
                              "--no-circuits", "--no-trust"],  # the renders and the pass: what a unit page shows
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    statuses: list[int] = []
    problems: list[str] = []
    with Server(create_app(out)) as base:
        def client_loop(seed: int) -> None:
            rng = random.Random(seed)
            host, port = base.removeprefix("http://").split(":")
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            deadline = time.monotonic() + 90
            for _ in range(400):  # bounded in count and time
                if build.poll() is not None or time.monotonic() > deadline:
                    break
                status, body = _get(connection, f"/api/m/resnet18/layer1.0.conv1/{rng.randrange(32)}")
                statuses.append(status)
                if status == 200:
                    _check_unit(connection, json.loads(body), problems)
                if rng.random() < 0.2:
                    statuses.append(_get(connection, "/api/m/resnet18/layer1.0.conv1")[0])
            connection.close()

        threads = [threading.Thread(target=client_loop, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    _, stderr = build.communicate(timeout=300)
    assert build.returncode == 0, stderr
    assert len(statuses) > 20 and not [s for s in statuses if s >= 500], sorted(set(statuses))
    assert set(statuses) == {200}, sorted(set(statuses))
    assert not problems, problems[:5]
