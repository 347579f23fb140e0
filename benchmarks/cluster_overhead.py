"""Atlas builds on Dask vs on this machine alone (issue "Beyond one machine").

The same atlas (EfficientNet-Lite0 ``_blocks.8``, 8 units, the paper's recipe, quality scores, an exemplar
pass over 240 reference crops) is built three ways, each into a fresh folder, alternating, in this
process: locally, on ``local:1`` (one worker process with both threads) and on ``local:2`` (two worker
processes, one thread each). Reported: wall time of the build (cluster start-up separately), units per
minute, and the ratio to the local build (target ≤ 1.10).

It also measures what bounds one client: the bytes each finished unit sends back (image and values)
and the client's time to write and commit one unit, against a worker's time to render it; their ratio is
how many workers one client can feed.

    .venv/bin/python benchmarks/cluster_overhead.py           # about 8 minutes; prints, rewrites its section of RESULTS.md
    .venv/bin/python benchmarks/cluster_overhead.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import filterscope as fs
from _results import machine, markdown_table, write_section  # benchmarks/_results.py
from filterscope.atlas.distributed import DaskExecutor
from filterscope.atlas.records import PlannedRender
from filterscope.atlas.stages.renders import RenderTask, record_renders, render_task
from filterscope.atlas.store import AtlasStore
from filterscope.demo import write_reference_set
from filterscope.engine.identity import RenderSettings
from filterscope.runtime import Runtime, configure_threads

LAYER, UNITS = "_blocks.8", list(range(8))


def build(model: fs.LoadedModel, folder: Path, recipe: fs.Recipe, data: Path, cluster: str | None) -> tuple[float, float]:
    """(start-up seconds, build seconds)."""
    start = time.perf_counter()
    executor = DaskExecutor(cluster) if cluster else None
    if executor is not None:
        executor.connect()
    ready = time.perf_counter()
    try:
        fs.build_atlas(folder, model, LAYER, units=UNITS, recipes=[recipe], dataset=data, exemplars=9,
                       executor=executor)
    finally:
        if executor is not None:
            executor.close()
    return ready - start, time.perf_counter() - ready


def client_cost(model: fs.LoadedModel, recipe: fs.Recipe, tmp: Path) -> tuple[float, float, float]:
    """(bytes per unit, client seconds per unit to write and commit, render seconds per unit)."""
    store = AtlasStore(tmp / "cost")
    fs.build_atlas(store, model, LAYER, units=[], recipes=[])  # records the model and layer
    layer = store.layers()[0]
    settings = RenderSettings.of(model, Runtime())
    planned = [PlannedRender(layer.id, u, f"channel({LAYER}, {u})", "paper", recipe.to_json(), 0, settings, f"cost-{u}")
               for u in range(4)]
    store.add_renders(planned)
    task = RenderTask(LAYER, tuple(store.pending_renders([p.key for p in planned])), recipe, "paper", 0, Runtime())
    start = time.perf_counter()
    outcome = render_task(model, task)
    outcomes = outcome.outcomes
    rendered = (time.perf_counter() - start) / len(outcomes)
    size = statistics.mean(len(o.png or b"") + 400 for o in outcomes)  # image + the values (a few hundred bytes)
    start = time.perf_counter()
    record_renders(store, model.name, task, outcome)
    return size, (time.perf_counter() - start) / len(outcomes), rendered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small recipe, one repeat")
    args = parser.parse_args()
    configure_threads()
    recipe = fs.get_recipe("paper").replace(scales=4, steps=4) if args.quick else fs.get_recipe("paper")
    repeats = 1 if args.quick else 2
    model = fs.load_model("efficientnet_lite0")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        data = write_reference_set(tmp / "data", 240)
        times: dict[str, list[tuple[float, float]]] = {"local": [], "local:1": [], "local:2": []}
        for r in range(repeats):
            for label in times:
                times[label].append(build(model, tmp / f"{label.replace(':', '')}-{r}", recipe, data,
                                          None if label == "local" else label))
        size, client_seconds, render_seconds = client_cost(model, recipe, tmp)
    base = statistics.median(t for _, t in times["local"])
    rows = []
    for label, runs in times.items():
        startup = statistics.median(s for s, _ in runs)
        seconds = statistics.median(t for _, t in runs)
        rows.append(f"| {label} | {startup:.1f} | {seconds:.1f} | {len(UNITS) / seconds * 60:.1f} | {seconds / base:.2f} |")
    feeds = render_seconds / client_seconds
    table = "\n".join([
        f"Machine: {machine()}. `{LAYER}`, {len(UNITS)} units, {'--quick recipe' if args.quick else 'paper recipe'}, "
        f"quality scores, exemplar pass over 240 images; medians of {repeats}.", "",
        *markdown_table(["where", "cluster start-up, s", "build, s", "units per minute", "vs local"], rows), "",
        f"Per finished unit a worker sends back about {size / 1024:.0f} KiB (the PNG and its values); the client "
        f"writes and commits it in {client_seconds * 1000:.1f} ms, while rendering it takes a worker "
        f"{render_seconds:.1f} s (this CPU, 2 threads): one client can feed about {feeds:.0f} such workers before "
        f"writing becomes the bottleneck ({size * len(UNITS) / 1024:.0f} KiB per {len(UNITS)} units on the network)."])
    print(table)
    if not args.quick:
        write_section("cluster-overhead", table, heading="## Atlas builds on Dask (benchmarks/cluster_overhead.py)",
                      intro="The same atlas built locally and on a LocalCluster of 1 and 2 workers, and what one "
                            "client can feed.")


if __name__ == "__main__":
    main()
