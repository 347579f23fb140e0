"""Speed of activation maximization: the naive loop vs filterscope vs the compute floor.

Times, side by side in one run on one machine:

1. the naive reference loop (:func:`filterscope.engine.naive.naive_render`): the paper's code, one filter at
   a time, the whole network on every step, NCHW float32, weights frozen;
2. filterscope at the same recipe: truncated forward, channels-last, the automatic batch size, in
   ``--precision fp32``, in ``bf16``, and in the default ``auto`` (which of the two a timed probe picks
   on this machine; the table says which and why);
3. the compute floor: only the truncated network's forward+backward passes that the recipe needs
   (plus the two forward passes that measure the start and end activation), at filterscope's batch
   size and settings, with no optimizer, resizing or blur;

on ResNet34 (random weights) at ``layer2.2.conv1`` and ``layer4.2.relu`` and on EfficientNet-Lite0 at
an early and a late block. Also: how time per filter changes with the batch size and the layer depth,
peak memory (measured in a child process), whether the images match the naive loop's, and one full
paper-recipe run.

The timing recipe is the paper's (12 scales, 56→408 px) with 2 steps per early and 3 per late scale
instead of 20/26 (30 steps instead of 276), so the whole benchmark takes about 10 minutes on 2 cores.

    .venv/bin/python benchmarks/speed.py            # prints tables, rewrites its section of RESULTS.md
    .venv/bin/python benchmarks/speed.py --quick    # a smoke run, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

import filterscope.runtime.precision as precision_module
from _results import machine as describe_machine
from _results import write_section  # benchmarks/_results.py
from filterscope import Channel, Recipe, load_model, render
from filterscope.engine.naive import naive_render
from filterscope.engine.render import choose_runtime, plan_batches
from filterscope.layers import resolve_layer
from filterscope.runtime import (
    Forward,
    Runtime,
    configure_threads,
    memory_format,
    proc_bytes,
)

TIMING = Recipe(steps=2, late_steps_factor=1.5, name="timing")
CASES = [("resnet34", "random", "layer2.2.conv1"), ("resnet34", "random", "layer4.2.relu"),
         ("efficientnet_lite0", None, "_blocks.3"), ("efficientnet_lite0", None, "_blocks.15")]
DEPTHS = ["layer1.2.relu", "layer2.3.relu", "layer3.5.relu", "layer4.2.relu"]
BATCHES = (1, 2, 4, 8, 16)


# -------------------------------------------------------------------------------------- measuring
def measured(fn):
    """``(seconds, value)`` of ``fn()``."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def peak_in_child(job: dict) -> int | None:
    """Peak memory (bytes above the resident set at the start) of one job, run in a fresh process.

    The child sets glibc's MALLOC_MMAP_THRESHOLD_ so that freed tensors go back to the system at once and
    the resident set follows the live tensors. That makes every allocation a page fault, so timings are
    never taken there.
    """
    if not Path("/proc/self/clear_refs").exists():
        return None
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run([sys.executable, __file__, "--peak", json.dumps(job)], capture_output=True, text=True,
                          env=env, cwd=Path(__file__).parent, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return int(done.stdout.strip().splitlines()[-1])


def run_peak_job(job: dict) -> None:
    model = load_model(job["model"], job["weights"])
    ref = resolve_layer(model, job["layer"])
    recipe = Recipe.from_dict(job["recipe"])
    filters = job["filters"]
    if job["mode"] == "naive":
        def work() -> object:
            return [naive_render(model, str(ref), f, recipe) for f in filters]
    else:
        runtime = Runtime(precision=job["mode"])
        def work() -> object:
            return fast(model, ref, filters, recipe, runtime, job["batch"])
    fast(model, ref, filters[:1], Recipe(size=32, scales=1, steps=1), Runtime(), 1)  # lazy initialization
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current resident set
    before = proc_bytes("VmRSS")
    work()
    print(proc_bytes("VmHWM") - before)


def floor_seconds(model, ref, recipe: Recipe, batch: int, runtime: Runtime, filters: int) -> float:
    """Seconds per filter of just the truncated forward+backward passes of ``recipe``, ``filters`` filters
    in batches of ``batch`` (plus the forward passes that measure the start and end activation)."""
    normalize = model.preprocessing.normalize
    with memory_format(model, runtime), Forward(model, [ref], runtime) as forward:
        start = time.perf_counter()
        for first in range(0, filters, batch):
            count = min(batch, filters - first)
            with torch.no_grad():
                forward(normalize(torch.rand(count, 3, recipe.size, recipe.size)))
            for size, steps in zip(recipe.sizes(), recipe.steps_per_scale()):
                x = torch.rand(count, 3, size, size, requires_grad=True)
                for _ in range(steps):
                    x.grad = None
                    forward(normalize(x))[ref][:, 0].mean(dim=(1, 2)).sum().backward()
            with torch.no_grad():
                forward(normalize(torch.rand(count, 3, recipe.output_size, recipe.output_size)))
        return (time.perf_counter() - start) / filters


def fast(model, ref, filters, recipe, runtime, batch=None):
    return render(model, [Channel(ref, f) for f in filters], recipe=recipe, seed=0, runtime=runtime,
                  batch_size=batch)


def mib(count: int | None) -> str:
    return "–" if count is None else f"{count / 2**20:.0f}"


def machine() -> str:
    return f"{describe_machine()}, {torch.get_num_threads()} threads"


# ------------------------------------------------------------------------------------------- runs
def compare(model, ref, filters: list[int], recipe: Recipe) -> dict:
    """Naive vs fast (fp32, bf16) vs floor for one layer, and how far their results lie apart."""
    fp32, bf16 = Runtime(precision="fp32"), Runtime(precision="bf16")
    objectives = [Channel(ref, f).resolve(model) for f in filters]
    batch32 = plan_batches(model, objectives, recipe, fp32)
    batch16 = plan_batches(model, objectives, recipe, bf16)
    fast(model, ref, filters[:1], Recipe(size=32, scales=2, steps=1), fp32)  # warm-up
    naive_s, naive = measured(lambda: [naive_render(model, str(ref), f, recipe) for f in filters])
    fast_s, result = measured(lambda: fast(model, ref, filters, recipe, fp32, batch32))
    trunc_s, trunc = measured(lambda: fast(model, ref, filters[:2], recipe, Runtime(precision="fp32",
                                                                                    channels_last=False), 1))
    bf16_s, low = measured(lambda: fast(model, ref, filters, recipe, bf16, batch16))
    # the default runtime, as a user gets it: the probe (once per machine, model, layer and shape; timed on
    # its own, the cache of earlier runs bypassed), then the render
    precision_module._MEMORY.clear()
    cache, precision_module.CACHE_FILE = precision_module.CACHE_FILE, "speed-benchmark-probes.json"
    (precision_module.cache_dir() / precision_module.CACHE_FILE).unlink(missing_ok=True)
    try:
        probe_s, (_chosen, choice) = measured(lambda: choose_runtime(model, objectives, recipe, Runtime()))
        auto_s, auto = measured(lambda: fast(model, ref, filters, recipe, Runtime()))
    finally:
        precision_module.CACHE_FILE = cache
    job = {"model": model.name, "weights": "random" if model.weights.startswith("random") else None,
           "layer": str(ref), "recipe": recipe.to_dict(), "filters": filters}
    naive_peak = peak_in_child({**job, "mode": "naive", "filters": filters[:1]})
    fast_peak = peak_in_child({**job, "mode": "fp32", "batch": batch32})
    bf16_peak = peak_in_child({**job, "mode": "bf16", "batch": batch16})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the naive loop itself, rounded differently
    try:
        one_thread = [naive_render(model, str(ref), f, recipe) for f in filters[:2]]
    finally:
        torch.set_num_threads(threads)
    images = torch.stack([image for image, _ in naive])
    values = torch.tensor([value for _, value in naive])
    n = len(filters)
    return {
        "naive": naive_s / n, "fast": fast_s / n, "truncated": trunc_s / 2, "bf16": bf16_s / n,
        "auto": auto_s / n, "auto_precision": auto.extra["precision"], "auto_reason": choice.reason,
        "auto_batch": auto.extra["batch_size"], "probe": probe_s,
        "floor": floor_seconds(model, ref, recipe, batch32, fp32, n),
        "floor_bf16": floor_seconds(model, ref, recipe, batch16, bf16, n),
        "batch": batch32, "batch_bf16": batch16,
        "naive_peak": naive_peak, "fast_peak": fast_peak, "bf16_peak": bf16_peak,
        "truncated_max_diff": float((trunc.images - images[:2]).abs().max()),
        "fast_mean_diff": float((result.images - images).abs().mean()),
        "threads_mean_diff": float((torch.stack([i for i, _ in one_thread]) - images[:2]).abs().mean()),
        "fast_ratio": float((result.values / values).mean()),
        "bf16_ratio": float((low.values / values).mean()),
    }


def sweep(model, ref, recipe: Recipe, precision: str) -> dict[int, float]:
    runtime = Runtime(precision=precision)
    times = {}
    for batch in BATCHES:
        seconds, _ = measured(lambda b=batch: fast(model, ref, list(range(b)), recipe, runtime, b))
        times[batch] = seconds / batch
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 step per scale, 2 filters, no sweeps; write nothing")
    parser.add_argument("--peak", help=argparse.SUPPRESS)  # internal: measure one job's peak memory
    args = parser.parse_args()
    if args.peak:
        return run_peak_job(json.loads(args.peak))
    configure_threads()
    recipe = Recipe(steps=1, late_steps_factor=1.0, name="quick") if args.quick else TIMING
    filters = [0, 1] if args.quick else [0, 1, 2, 3]
    models = {}

    def get(name, weights):
        if name not in models:
            models[name] = load_model(name, weights)
        return models[name]

    out = [f"Machine: {machine()}.",
           f"Timing recipe: the paper's 12 scales (56→408 px) with {recipe.steps_per_scale()[0]}/"
           f"{recipe.steps_per_scale()[-1]} steps per early/late scale ({recipe.total_steps} steps per filter); "
           f"{len(filters)} filters per layer. Speedup = naive ÷ filterscope; floor = the truncated network's "
           "forward+backward passes alone at filterscope's batch size and settings.", ""]

    rows = []
    for name, weights, layer in CASES:
        model = get(name, weights)
        ref = resolve_layer(model, layer)
        r = compare(model, ref, filters, recipe)
        rows.append((name, layer, r))
        print(f"{name} {layer}: {r}", flush=True)
    out += ["| model | layer | naive s/filter | truncated only | filterscope fp32 (batch) | speedup | ÷ floor "
            "| bf16 (batch) | bf16 speedup | bf16 ÷ floor | **default** (auto: chosen, batch) | **default speedup** "
            "| peak MiB naive / fp32 / bf16 |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, layer, r in rows:
        out.append(f"| {name} | `{layer}` | {r['naive']:.2f} | {r['truncated']:.2f} | {r['fast']:.2f} ({r['batch']}) "
                   f"| {r['naive'] / r['fast']:.2f}× | {r['fast'] / r['floor']:.2f} | {r['bf16']:.2f} "
                   f"({r['batch_bf16']}) | {r['naive'] / r['bf16']:.2f}× | {r['bf16'] / r['floor_bf16']:.2f} "
                   f"| {r['auto']:.2f} ({r['auto_precision']}, {r['auto_batch']}) | **{r['naive'] / r['auto']:.2f}×** "
                   f"| {mib(r['naive_peak'])} / {mib(r['fast_peak'])} / {mib(r['bf16_peak'])} |")
    out += ["", "Why the default chose its precision (the probe's line, as the CLI prints it; the probe runs once per "
            "machine, model, layer and shape, and is not in the default's time):", ""]
    out += [f"- {name} `{layer}`: {r['auto_reason']} (probe: {r['probe']:.1f} s)" for name, layer, r in rows]
    out += ["", "Do the results agree? Pixel differences of the final images (0-1 scale) and activation reached, "
            "relative to the naive loop with the same seed:", "",
            "| model | layer | truncated only: max pixel Δ | fp32: mean pixel Δ | naive loop, 1 vs 2 threads: mean "
            "pixel Δ | activation fp32 ÷ naive | activation bf16 ÷ naive |",
            "|---|---|---|---|---|---|---|"]
    for name, layer, r in rows:
        out.append(f"| {name} | `{layer}` | {r['truncated_max_diff']:.1e} | {r['fast_mean_diff']:.3f} "
                   f"| {r['threads_mean_diff']:.3f} | {r['fast_ratio']:.3f} | {r['bf16_ratio']:.3f} |")

    if not args.quick:
        out += ["", "Seconds per filter by batch size (filterscope, b filters in one batch):", "",
                "| model | layer | precision | " + " | ".join(f"batch {b}" for b in BATCHES) + " |",
                "|---|---|---|" + "---|" * len(BATCHES)]
        for name, weights, layer in CASES:
            model = get(name, weights)
            ref = resolve_layer(model, layer)
            for precision in ("fp32", "bf16"):
                times = sweep(model, ref, recipe, precision)
                print(f"sweep {name} {layer} {precision}: {times}", flush=True)
                out.append(f"| {name} | `{layer}` | {precision} | " + " | ".join(f"{times[b]:.2f}" for b in BATCHES)
                           + " |")

        model = get("resnet34", "random")
        out += ["", "Seconds per filter by depth (ResNet34, 2 filters, fp32):", "",
                "| layer | naive | filterscope | speedup |", "|---|---|---|---|"]
        for layer in DEPTHS:
            ref = resolve_layer(model, layer)
            naive_s, _ = measured(lambda name=layer: [naive_render(model, name, f, recipe) for f in (0, 1)])
            fast_s, _ = measured(lambda r=ref: fast(model, r, [0, 1], recipe, Runtime(precision="fp32")))
            print(f"depth {layer}: naive {naive_s / 2:.2f} fast {fast_s / 2:.2f}", flush=True)
            out.append(f"| `{layer}` | {naive_s / 2:.2f} | {fast_s / 2:.2f} | {naive_s / fast_s:.2f}× |")

        ref = resolve_layer(model, "layer4.2.relu")
        paper = Recipe()
        naive_s, _ = measured(lambda: naive_render(model, "layer4.2.relu", 0, paper))
        fast_s, _ = measured(lambda: fast(model, ref, [0, 1, 2, 3], paper, Runtime(precision="fp32")))
        low_s, _ = measured(lambda: fast(model, ref, [0, 1, 2, 3], paper, Runtime(precision="bf16")))
        auto_s, auto = measured(lambda: fast(model, ref, [0, 1, 2, 3], paper, Runtime()))
        fast_s /= 4
        low_s /= 4
        auto_s /= 4
        out += ["", "Full paper recipe (276 steps, 56→408 px), ResNet34 `layer4.2.relu`:", "",
                "| run | s/filter | filters per minute | whole layer (512 filters) |", "|---|---|---|---|"]
        for label, seconds in (("naive loop, 1 filter", naive_s), ("filterscope fp32, 4 filters (auto batch)", fast_s),
                               ("filterscope bf16, 4 filters (auto batch)", low_s),
                               (f"filterscope default ({auto.extra['precision']}), 4 filters", auto_s)):
            out.append(f"| {label} | {seconds:.1f} | {60 / seconds:.2f} | {512 * seconds / 3600:.1f} h |")

    table = "\n".join(out)
    print(table)
    if not args.quick:
        write_section("speed", table, heading="Speed: naive loop, filterscope, compute floor",
                      intro="`benchmarks/speed.py`: reproduce with `.venv/bin/python benchmarks/speed.py` "
                            "(about 10 minutes; keep the machine otherwise idle).")


if __name__ == "__main__":
    main()
