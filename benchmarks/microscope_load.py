"""Load on the microscope (bounded, loopback only): N concurrent clients against a 1,000-unit atlas.

The atlas is built for real with ``build_atlas``: a small random conv net whose last layer has 1,000
units, each rendered with a tiny recipe, with an exemplar pass over 64 images. The server
(``filterscope serve``, uvicorn) runs in its own process on 127.0.0.1; the clients are threads of this
process with keep-alive connections, each sending a fixed number of requests in a fixed mix: the unit
JSON (``/api/m/.../UNIT``), the unit page, a render image and an exemplar crop, units drawn at random.
Reported: requests/s, p50/p95 latency per kind, errors (anything but 200). Target: 0 errors, p95 under
50 ms for the unit JSON.

    .venv/bin/python benchmarks/microscope_load.py            # prints, rewrites its section of RESULTS.md
    .venv/bin/python benchmarks/microscope_load.py --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

import filterscope as fs
from _results import machine, markdown_table, write_section  # benchmarks/_results.py
from filterscope.demo import write_reference_set

UNITS = 1000
TINY = dataclasses.replace(fs.get_recipe("paper"), size=24, scales=1, steps=2, reference_size=None)


def build(folder: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, UNITS, 3, stride=2, padding=1))
    model = fs.wrap_model(net, name="wide", preprocessing=fs.Preprocessing(32, resize_size=32))
    data = write_reference_set(folder / "data", 64, side=64)
    fs.build_atlas(folder / "atlas", model, "2", recipes=[TINY], dataset=data, exemplars=4, scores=False,
                   batch_size=64)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_server(port: int, server: subprocess.Popen) -> None:
    """Until ``server`` (a ``filterscope serve`` child) accepts connections on ``port``; it failing is the end."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"the server did not start: {server.stderr.read().decode()}") from None
            time.sleep(0.2)


def client(port: int, paths: list[tuple[str, str]]) -> list[tuple[str, float, int]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    for kind, path in paths:
        start = time.perf_counter()
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            status = response.status
        except OSError:
            status = 0
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        out.append((kind, time.perf_counter() - start, status))
    connection.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4000, help="in all, split over the clients")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    total = 400 if args.quick else args.requests
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        started = time.perf_counter()
        build(tmp)
        built = time.perf_counter() - started
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "filterscope", "serve", str(tmp / "atlas"), "--port",
                                   str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_server(port, server)
            probe = http.client.HTTPConnection("127.0.0.1", port)
            probe.request("GET", "/api/m/wide/2/0")
            unit = json.loads(probe.getresponse().read())
            probe.close()
            render_id = unit["renders"][0]["id"]
            rng = random.Random(0)
            mix = []
            for _ in range(total):
                u = rng.randrange(UNITS)
                kind = rng.choice(["unit JSON", "unit JSON", "unit page", "render image", "exemplar crop"])
                path = {"unit JSON": f"/api/m/wide/2/{u}", "unit page": f"/m/wide/2/{u}",
                        "render image": f"/img/render/{render_id + u}",
                        "exemplar crop": f"/img/exemplar/{1 + 12 * u}"}[kind]  # 12 exemplar rows per unit
                mix.append((kind, path))
            parts = [mix[i::args.clients] for i in range(args.clients)]
            client(port, mix[:50])  # warm-up
            start = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                results = [r for part in pool.map(lambda p: client(port, p), parts) for r in part]
            seconds = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait(10)
    rows = []
    for kind in ("unit JSON", "unit page", "render image", "exemplar crop", "all"):
        times = sorted(t for k, t, _ in results if kind in (k, "all"))
        errors = sum(1 for k, _, s in results if kind in (k, "all") and s != 200)
        p50, p95 = statistics.median(times), times[int(0.95 * (len(times) - 1))]
        rows.append(f"| {kind} | {len(times)} | {p50 * 1000:.1f} | {p95 * 1000:.1f} | {errors} |")
    table = "\n".join([
        f"Machine: {machine()}. A {UNITS}-unit atlas (built in {built:.0f} s), {args.clients} concurrent clients "
        f"with keep-alive, {total} requests in {seconds:.1f} s: **{total / seconds:.0f} requests/s**, server and "
        "clients on the same 2 cores.", "",
        *markdown_table(["request", "count", "p50, ms", "p95, ms", "errors"], rows)])
    print(table)
    if not args.quick:
        write_section("microscope-load", table, heading="## Microscope under load (benchmarks/microscope_load.py)",
                      intro="Concurrent clients on 127.0.0.1 against `filterscope serve` with a 1,000-unit atlas.")


if __name__ == "__main__":
    main()
