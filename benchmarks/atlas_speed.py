"""Atlas builds, measured (issue "Atlas", section Performance):

1. **Exemplar pass vs a bare forward pass.** Images per second of the pass (decoding in a background
   thread, every layer's tracker, the memory-mapped matrices) over images per second of the same decoding
   and the same truncated, batched forward pass with nothing kept, for 1, 2 and 4 Lite0 layers, measured
   alternately in this process. Target: at least 0.9.
2. **Memory flat in the dataset size.** Peak RSS (VmHWM) of a child process that runs the pass over 500
   and over 5,000 images (a list file naming the same 500 crops ten times), one layer.
3. **Rendering vs ``filterscope visualize``.** Seconds per unit of ``atlas build`` (no scores) and of
   ``visualize`` on the same units, recipe and seed, each in a fresh process, alternating; plus what the
   quality scores add per unit, and the time a resumed build spends before its first new unit.

    .venv/bin/python benchmarks/atlas_speed.py            # about 10 minutes; prints, rewrites its section of RESULTS.md
    .venv/bin/python benchmarks/atlas_speed.py --quick    # smaller: a check that it runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import filterscope as fs
from _results import machine, markdown_table, write_section  # benchmarks/_results.py
from filterscope.analysis.inputs import decode_image, decoded
from filterscope.atlas.build import build_atlas
from filterscope.demo import write_reference_set
from filterscope.runtime import ANALYSIS_BATCH, Forward, configure_threads, prefetch

LAYER_SETS = (["_blocks.4"], ["_blocks.4", "_blocks.10"], ["_blocks.4", "_blocks.8", "_blocks.12", "_blocks.15"])
RENDER_LAYER, RENDER_UNITS = "_blocks.8", "0-3"


def bare_forward(model: fs.LoadedModel, layers: list[str], paths: list[Path]) -> float:
    """Images per second: the pass's decoding and forward passes, keeping nothing."""
    refs = [fs.resolve_layer(model, layer) for layer in layers]
    start = time.perf_counter()
    pending = []
    with torch.no_grad(), Forward(model, refs) as forward:
        for parts in prefetch(paths, lambda p: decode_image(model, p, "crop", None), ahead=ANALYSIS_BATCH * 2):
            pending.append(decoded(*parts).pixels)
            if len(pending) == ANALYSIS_BATCH:
                forward(model.preprocessing.normalize(torch.stack(pending)))
                pending.clear()
        if pending:
            forward(model.preprocessing.normalize(torch.stack(pending)))
    return len(paths) / (time.perf_counter() - start)


def pass_rate(model: fs.LoadedModel, layers: list[str], data: Path, folder: Path) -> float:
    summary = build_atlas(folder, model, layers, recipes=[], dataset=data, exemplars=9)
    return summary.pass_images_per_second


def pass_rows(model: fs.LoadedModel, data: Path, tmp: Path, repeats: int) -> list[str]:
    paths = sorted(data.glob("*.jpg"))
    bare_forward(model, list(LAYER_SETS[-1]), paths[:40])  # warm-up: the first pass through a model is slower
    pass_rate(model, list(LAYER_SETS[-1]), data, tmp / "warm-up")
    rows = []
    for layers in LAYER_SETS:
        bare, kept = [], []
        for r in range(repeats):  # alternating, so that drifts of the machine hit both
            bare.append(bare_forward(model, layers, paths))
            kept.append(pass_rate(model, layers, data, tmp / f"pass-{len(layers)}-{r}"))
        b, k = statistics.median(bare), statistics.median(kept)
        rows.append(f"| {', '.join(layers)} | {len(paths)} | {b:.1f} | {k:.1f} | {k / b:.2f} |")
    return rows


MEMORY_CHILD = """
import json, resource, sys
import filterscope as fs
from filterscope.atlas.build import build_atlas
model = fs.load_model("efficientnet_lite0")
summary = build_atlas(sys.argv[1], model, ["_blocks.4"], recipes=[], dataset=sys.argv[2], exemplars=9)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"peak": int(status["VmHWM"].split()[0]) * 1024, "rate": summary.pass_images_per_second}))
"""


def memory_rows(data: Path, tmp: Path, sizes: tuple[int, ...]) -> list[str]:
    paths = sorted(data.glob("*.jpg"))
    rows = []
    for size in sizes:
        listing = tmp / f"list-{size}.txt"
        listing.write_text("\n".join(str(paths[i % len(paths)]) for i in range(size)) + "\n")
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(tmp / f"mem-{size}"), str(listing)],
                             capture_output=True, text=True, check=True)
        found = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(f"| {size} | {found['peak'] / 2**20:.0f} | {found['rate']:.1f} |")
    return rows


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def render_rows(tmp: Path, recipe_args: list[str], repeats: int) -> list[str]:
    fsc = [sys.executable, "-m", "filterscope"]
    units = len(range(0, 4))
    atlas_s, visualize_s, scored_s = [], [], []
    for r in range(repeats):
        visualize_s.append(timed([*fsc, "visualize", "-l", RENDER_LAYER, "-f", RENDER_UNITS, *recipe_args, "-q",
                                  "-o", str(tmp / f"vis-{r}")]) / units)
        atlas_s.append(timed([*fsc, "atlas", "build", str(tmp / f"atlas-{r}"), "-l", RENDER_LAYER, "--units",
                              RENDER_UNITS, *recipe_args, "--no-scores", "-q"]) / units)
        scored_s.append(timed([*fsc, "atlas", "build", str(tmp / f"scored-{r}"), "-l", RENDER_LAYER, "--units",
                               RENDER_UNITS, *recipe_args, "-q"]) / units)
    model = fs.load_model("efficientnet_lite0")
    recipe = fs.get_recipe("paper").replace(**_recipe_changes(recipe_args))
    folder = tmp / "resume"
    build_atlas(folder, model, RENDER_LAYER, units=range(4), recipes=[recipe], scores=False)
    resumed = build_atlas(folder, model, RENDER_LAYER, units=range(5), recipes=[recipe], scores=False)
    v, a, s = statistics.median(visualize_s), statistics.median(atlas_s), statistics.median(scored_s)
    return [f"| `visualize` | {v:.2f} | 1.00 |", f"| `atlas build --no-scores` | {a:.2f} | {a / v:.2f} |",
            f"| `atlas build` (with quality scores) | {s:.2f} | {s / v:.2f} |",
            f"| resumed build (in process, model loaded), 4 of 5 units done: time before its first new unit | {resumed.render_start_seconds:.2f} s "
            f"| |"]


def _recipe_changes(args: list[str]) -> dict:
    names = {"--size": "size", "--scales": "scales", "--steps": "steps"}
    return {names[k]: int(v) for k, v in zip(args[::2], args[1::2])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats, a small recipe")
    args = parser.parse_args()
    configure_threads()
    images = 120 if args.quick else 500
    repeats = 1 if args.quick else 3
    recipe_args = ["--size", "32", "--scales", "3", "--steps", "4"] if args.quick else []
    model = fs.load_model("efficientnet_lite0")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        data = write_reference_set(tmp / "data", images)
        passes = pass_rows(model, data, tmp, repeats)
        memory = memory_rows(data, tmp, (images, images * 10))
        renders = render_rows(tmp, recipe_args, repeats)
    recipe = "the paper's recipe" if not recipe_args else " ".join(recipe_args)
    lines = [f"Machine: {machine()}. Images: crops of scikit-image's colour photos at 224 px (JPEG); batches of "
             f"{ANALYSIS_BATCH}; medians of {repeats}.", "",
             "Exemplar pass (9 exemplars of 3 kinds per unit, statistics, matrices) vs the same decoding and forward "
             "pass keeping nothing:", "",
             *markdown_table(["layers", "images", "bare forward, images/s", "exemplar pass, images/s", "ratio"],
                             passes), "",
             "Peak memory of a process running the pass over `_blocks.4` (model and torch included):", "",
             *markdown_table(["images", "peak RSS, MiB", "images/s"], memory), "",
             f"Rendering 4 units of `{RENDER_LAYER}`, {recipe}, seed 0, fresh processes (model loading included):",
             "", *markdown_table(["command", "seconds per unit", "vs visualize"], renders)]
    table = "\n".join(lines)
    print(table)
    if not args.quick:
        write_section("atlas-speed", table, heading="## Atlas builds (benchmarks/atlas_speed.py)",
                      intro="The exemplar pass's bookkeeping against a bare forward pass, memory as the dataset "
                            "grows, and atlas rendering against `filterscope visualize`.")


if __name__ == "__main__":
    main()
