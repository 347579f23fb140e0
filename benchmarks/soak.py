"""The microscope's memory over a long loopback soak, and the exemplar pass's peak memory against the dataset's size.

1. **Soak**: a 10,000-unit atlas built for real (a small random conv net whose last layer has 10,000 units, each
   rendered with a tiny recipe, exemplars from 64 images); ``filterscope serve`` in its own process on
   127.0.0.1; 8 client threads with keep-alive send a fixed mix (unit JSON, unit page, render image, exemplar
   crop) for ``--minutes`` (default 10, bounded also in count). The server's resident memory
   (``VmRSS``) is sampled every 10 s; reported: after the first minute (warm caches), at the end, the largest,
   and the p50/p95 of the unit JSON, errors (anything but 200).
2. **Exemplar pass memory**: the same kind of network (64 units) over synthetic folders of 500, 5,000 and
   50,000 small images, each pass in a fresh process; reported: its peak resident memory (``VmHWM``).

    .venv/bin/python benchmarks/soak.py                  # about 20 minutes; rewrites its section of RESULTS.md
    .venv/bin/python benchmarks/soak.py --quick          # a smoke run (1 minute, 1,000 units, 500 images), writes nothing
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

import filterscope as fs
from _results import machine, markdown_table, write_section  # benchmarks/_results.py
from filterscope.demo import write_reference_set
from microscope_load import client, free_port, wait_for_server  # benchmarks/microscope_load.py

TINY = dataclasses.replace(fs.get_recipe("paper"), size=24, scales=1, steps=2, reference_size=None)


def build(folder: Path, units: int) -> float:
    started = time.perf_counter()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, units, 3, stride=2, padding=1))
    model = fs.wrap_model(net, name="wide", preprocessing=fs.Preprocessing(32, resize_size=32))
    data = write_reference_set(folder / "data", 64, side=64)
    fs.build_atlas(folder / "atlas", model, "2", recipes=[TINY], dataset=data, exemplars=2, scores=False,
                   batch_size=64, circuits=False, trust=False)
    return time.perf_counter() - started


def resident(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"no {field} for process {pid}")


def soak(folder: Path, units: int, minutes: float, clients: int) -> dict:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "filterscope", "serve", str(folder / "atlas"), "--port",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_server(port, server)
        first = json.loads(_get(port, "/api/m/wide/2/0"))["renders"][0]["id"]
        end = time.monotonic() + minutes * 60
        samples: list[tuple[float, int]] = []
        results: list[tuple[str, float, int]] = []
        started = time.monotonic()

        def one(seed: int) -> list[tuple[str, float, int]]:
            rng, out = random.Random(seed), []
            while time.monotonic() < end and len(out) < 2_000_000 // clients:
                mix = []
                for _ in range(200):
                    u = rng.randrange(units)
                    kind = rng.choice(["unit JSON", "unit JSON", "unit page", "render image", "exemplar crop"])
                    mix.append((kind, {"unit JSON": f"/api/m/wide/2/{u}", "unit page": f"/m/wide/2/{u}",
                                       "render image": f"/img/render/{first + u}",
                                       "exemplar crop": f"/img/exemplar/{1 + 6 * u}"}[kind]))
                out += client(port, mix)
            return out

        with ThreadPoolExecutor(clients) as pool:
            futures = [pool.submit(one, seed) for seed in range(clients)]
            while time.monotonic() < end:
                samples.append((time.monotonic() - started, resident(server.pid)))
                time.sleep(10)
            samples.append((time.monotonic() - started, resident(server.pid)))
            for future in futures:
                results += future.result()
    finally:
        server.terminate()
        server.wait(10)
    warm = [rss for t, rss in samples if t >= 60] or [samples[-1][1]]
    unit_times = sorted(t for k, t, _ in results if k == "unit JSON")
    failed = collections.Counter(f"{k} {s}" for k, _, s in results if s != 200)
    return {"requests": len(results), "seconds": minutes * 60, "errors": sum(failed.values()), "failed": dict(failed),
            "rss_warm": warm[0], "rss_end": warm[-1], "rss_max": max(warm), "rss_samples": samples,
            "unit_p50": statistics.median(unit_times), "unit_p95": unit_times[int(0.95 * (len(unit_times) - 1))]}


def _get(port: int, path: str) -> bytes:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path)
    body = connection.getresponse().read()
    connection.close()
    return body


PASS = textwrap.dedent("""
    import sys, torch
    from torch import nn
    import filterscope as fs
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 64, 3, stride=2, padding=1))
    model = fs.wrap_model(net, name="small", preprocessing=fs.Preprocessing(32, resize_size=32))
    fs.build_atlas(sys.argv[1], model, "2", recipes=[], dataset=sys.argv[2], exemplars=4, circuits=False,
                   trust=False)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print(int(line.split()[1]) * 1024)
""")


def synthetic_folder(folder: Path, count: int) -> Path:
    """``count`` 32x32 PNGs of smooth noise (written once, then reused by the smaller counts)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(len(list(folder.glob("*.png"))), count):
        array = (rng.random((4, 4, 3)) * 255).astype(np.uint8)
        Image.fromarray(array).resize((32, 32), Image.Resampling.BILINEAR).save(folder / f"{i:06d}.png")
    return folder


def exemplar_memory(tmp: Path, counts: list[int]) -> list[dict]:
    rows = []
    images = synthetic_folder(tmp / "synthetic", max(counts))
    paths = sorted(images.glob("*.png"))
    for count in counts:
        listing = tmp / f"list-{count}.txt"
        listing.write_text("\n".join(str(p) for p in paths[:count]) + "\n")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", PASS, str(tmp / f"atlas-{count}"), str(listing)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"the exemplar pass over {count} images failed:\n{done.stderr[-2000:]}")
        rows.append({"images": count, "peak": int(done.stdout.split()[-1]), "seconds": time.perf_counter() - started})
        print(f"  exemplar pass over {count} images: peak {rows[-1]['peak'] / 2**20:.0f} MiB", flush=True)
    return rows


def report(built: float, units: int, clients: int, s: dict, passes: list[dict]) -> str:
    mib = 2**20
    growth = s["rss_end"] / s["rss_warm"] - 1
    lines = [f"Machine: {machine()}. A {units:,}-unit atlas (built in {built:.0f} s); `filterscope serve` and "
             f"{clients} keep-alive clients on the same cores, {s['requests']:,} requests in {s['seconds'] / 60:.0f} "
             f"minutes, {s['errors']} answers other than 200 {s.get('failed', '')}.", "",
             *markdown_table(["server memory (VmRSS)", "MiB"],
                             [f"| after the first minute | {s['rss_warm'] / mib:.0f} |",
                              f"| at the end | {s['rss_end'] / mib:.0f} ({growth:+.1%}) |",
                              f"| largest sample after the first minute | {s['rss_max'] / mib:.0f} |"]), "",
             f"Unit JSON under that load: p50 {s['unit_p50'] * 1000:.1f} ms, **p95 {s['unit_p95'] * 1000:.1f} ms**.", "",
             *markdown_table(["exemplar pass (64 units, 32 px)", "peak memory (VmHWM), MiB", "seconds"],
                             [f"| {p['images']:,} images | {p['peak'] / mib:.0f} | {p['seconds']:.0f} |"
                              for p in passes])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    units, minutes = (1000, 1.0) if args.quick else (10_000, args.minutes)
    counts = [500] if args.quick else [500, 5000, 50000]
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        built = build(tmp, units)
        print(f"  built the {units}-unit atlas in {built:.0f} s", flush=True)
        result = soak(tmp, units, minutes, args.clients)
        passes = exemplar_memory(tmp, counts)
    table = report(built, units, args.clients, result, passes)
    print(table)
    if not args.quick:
        Path(__file__).with_name("soak.json").write_text(json.dumps({"soak": result, "passes": passes}, indent=1))
        write_section("soak", table, heading="The microscope over a 10-minute soak; the exemplar pass's memory "
                      "(benchmarks/soak.py)", intro="`benchmarks/soak.py`: reproduce with `.venv/bin/python "
                      "benchmarks/soak.py` (about 20 minutes; keep the machine otherwise idle).")


if __name__ == "__main__":
    main()
