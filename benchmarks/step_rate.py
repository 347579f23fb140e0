"""The render step against the CPU's arithmetic peak; a whole layer; steps and early stopping; the demo.

Side by side in one run, on this machine, in fp32 (what every CPU without bf16 renders in; ``auto`` picks fp32
there):

1. **Peak**: the rate torch reaches on a 2048² fp32 matrix product (best of 5).
2. **Step rate**: one render step of the truncated network (forward to the layer, backward to the input; batch
   4, channels-last) for ResNet34 (random weights) and EfficientNet-Lite0, with the network as it is
   (``fold=False``: filterscope before issue 26) and with its batch norms folded (``fold=True``, the default
   now). FLOPs are counted by hooks on every convolution and linear layer of the truncated forward (2 per
   multiply-add), x2 for the backward pass to the input; rate = FLOPs / step; share = rate / peak.
3. **A whole layer**: units of Lite0 ``_blocks.15`` with the ``filterscope`` recipe, end to end through
   :func:`filterscope.engine.render` (precision probe, batch planning and all), before and after; the minutes for all
   320 units are extrapolated from ``--layer-units`` (default 32; ``--layer-units 320`` measures them all).
4. **Steps**: robustness of the 12 quality units (benchmarks/_quality.py) at 64-192 steps of the
   ``filterscope`` recipe, the seed-to-seed spread at 128, and a plateau rule: with a constant learning rate
   the first s steps of a 128-step render *are* an s-step render, so stopping a unit when its objective has
   plateaued is emulated exactly by rendering it with the steps the rule gives it.
5. **The demo**: ``filterscope demo --precision fp32`` in a child process: total seconds and seconds to the
   first figure; ``--demo-before TREE`` also runs another source tree's demo (a ``git worktree`` of an
   earlier commit) the same way.

    .venv/bin/python benchmarks/step_rate.py                 # about 25 minutes; rewrites its RESULTS.md section
    .venv/bin/python benchmarks/step_rate.py --quick         # a smoke run, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

import filterscope as fs
import filterscope.runtime.precision as precision_module
from _quality import UNITS  # benchmarks/_quality.py
from _results import machine, markdown_table, write_section
from filterscope.layers import resolve_layer
from filterscope.metrics import reference_max, robustness
from filterscope.runtime import Forward, Runtime, configure_threads, keep_freed_memory

CASES = [("resnet34", "random", "layer2.2.conv1", 408), ("resnet34", "random", "layer4.2.relu", 408),
         ("efficientnet_lite0", None, "_blocks.15", 224), ("efficientnet_lite0", None, "_blocks.15", 408)]
BATCH = 4
FP32 = Runtime(precision="fp32")


def without_bf16() -> None:
    """Make ``auto`` decide as on a CPU without bf16 instructions (it renders fp32 without a probe there)."""
    precision_module.cpu_bf16_flags = lambda: ()  # type: ignore[assignment]


# ------------------------------------------------------------------------------------------ peak
def matmul_peak(side: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(side, side), torch.randn(side, side)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * side**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------- step rate
def forward_flops(model, ref, size: int) -> float:
    """FLOPs (2 per multiply-add) of the convolutions and linear layers of the truncated forward, batch BATCH."""
    total = 0

    def count(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += 2 * output.numel() * module.in_channels // module.groups * k
        else:
            total += 2 * output.numel() * module.in_features

    handles = [m.register_forward_hook(count) for m in model.module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad(), Forward(model, [ref], FP32) as forward:
            forward(torch.rand(BATCH, 3, size, size))
    finally:
        for handle in handles:
            handle.remove()
    return total


def step_seconds(model, ref, size: int, repeats: int) -> dict[bool, float]:
    """Best seconds of one forward+backward step, unfolded and folded, measured alternately."""
    x = torch.rand(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    forwards = {fold: Forward(model, [ref], FP32, fold=fold) for fold in (False, True)}
    best = {False: float("inf"), True: float("inf")}

    def step(forward: Forward) -> None:
        image = x.clone().requires_grad_(True)
        forward(image)[ref][:, 0].mean().backward()

    with fs.runtime.memory_format(model, FP32):
        for _ in range(repeats):
            for fold, forward in forwards.items():
                with forward:
                    step(forward)  # warm-up (and the folded copy, once)
                    best[fold] = min(best[fold], min(_timed(lambda f=forward: step(f)) for _ in range(3)))
    return best


def step_child(repeats: int) -> list[dict]:
    """In a child process: each case's GFLOP and its best step, unfolded and folded."""
    rows = []
    for name, weights, layer, size in CASES:
        model = fs.load_model(name, weights)
        ref = resolve_layer(model, layer)
        seconds = step_seconds(model, ref, size, repeats)
        rows.append({"model": name, "layer": layer, "size": size, "gflop": forward_flops(model, ref, size) / 1e9,
                     "plain": seconds[False], "folded": seconds[True]})
    return rows


def step_table(repeats: int, rounds: int) -> list[dict]:
    """Steps before (unfolded, glibc's default allocator: filterscope before issue 26), folded, and after (folded,
    freed memory kept: :func:`filterscope.runtime.keep_freed_memory`, which the command line turns on); the
    allocator is per process, so each setting runs in its own child process, alternately, best of ``rounds``."""
    runs: dict[bool, list[list[dict]]] = {False: [], True: []}
    for _ in range(rounds):
        for keep in (False, True):
            runs[keep].append(in_child("steps", keep, repeats))
    rows = []
    for i, case in enumerate(runs[False][0]):
        best = {key: min(run[i][key] for run in runs[False]) for key in ("plain", "folded")}
        after = min(run[i]["folded"] for run in runs[True])
        rows.append({**{k: case[k] for k in ("model", "layer", "size", "gflop")},
                     "before": best["plain"], "folded": best["folded"], "after": after})
        print(f"  {case['model']} {case['layer']} {case['size']}px: {case['gflop']:.1f} GFLOP, "
              f"{best['plain']:.3f} → {best['folded']:.3f} (folded) → {after:.3f} s", flush=True)
    return rows


def in_child(task: str, keep_memory: bool, arg: int) -> list[dict] | dict:
    """``task`` (``steps``, ``layer``) run by this script in a fresh process; its JSON answer."""
    command = [sys.executable, __file__, "--child", task, "--child-arg", str(arg)]
    done = subprocess.run(command + (["--keep-freed-memory"] if keep_memory else []), capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the child for {task} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ whole layer
def layer_child(units: int, fold: bool) -> dict:
    """In a child process: ``units`` units of Lite0 ``_blocks.15``, end to end through :func:`filterscope.engine.render`."""
    model = fs.load_model("efficientnet_lite0")
    objectives = [fs.Channel("_blocks.15", u) for u in range(units)]
    start = time.perf_counter()
    rendered = fs.render(model, objectives, recipe=fs.get_recipe("filterscope"), runtime=Runtime(fold=fold))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "per_unit": seconds / units, "activation": float(rendered.values.mean()),
            "precision": rendered.extra["precision"]}


def whole_layer(units: int) -> dict:
    """Before: unfolded, default allocator (filterscope before issue 26); after: the command line's defaults."""
    before = in_child("layer-before", False, units)
    print(f"  whole layer before: {before['seconds']:.0f} s for {units} units", flush=True)
    after = in_child("layer-after", True, units)
    print(f"  whole layer after: {after['seconds']:.0f} s for {units} units", flush=True)
    return {"units": units, "before": before, "after": after}


# ------------------------------------------------------------------------------------------ steps
def unit_robustness(model, crops, steps: list[int], seed: int) -> list[float]:
    """Robustness of each quality unit rendered with ``steps[i]`` steps of the filterscope recipe."""
    recipe = fs.get_recipe("filterscope")
    scores = []
    for (layer, filters), unit_steps in zip(_units(), _chunks(steps)):
        for f, s in zip(filters, unit_steps):
            objective = fs.Channel(layer, f)
            image = fs.render(model, objective, recipe=recipe.replace(steps=s), seed=seed).images
            scores.append(float(robustness(model, objective.resolve(model), image,
                                           reference_max(model, objective.resolve(model), crops), samples=16)[0]))
    return scores


def _units() -> list[tuple[str, list[int]]]:
    return list(UNITS.items())


def _chunks(values: list[int]) -> list[list[int]]:
    return [values[i:i + 4] for i in range(0, len(values), 4)]


def plateau_step(history: torch.Tensor, window: int, gain: float) -> int:
    """The first step after which the objective's mean over the last ``window`` steps rose by less than ``gain``
    (a share) over the ``window`` before: the rule's stopping step (the last step if it never plateaus)."""
    values = history.tolist()
    for step in range(2 * window, len(values) + 1):
        recent = statistics.mean(values[step - window:step])
        before = statistics.mean(values[step - 2 * window:step - window])
        if recent - before < gain * abs(before):
            return step
    return len(values)


def steps_study(counts: list[int], window: int, gain: float) -> dict:
    model = fs.load_model("efficientnet_lite0")
    crops = fs.reference_crops(model)
    units = [(layer, f) for layer, filters in _units() for f in filters]
    curve = {n: unit_robustness(model, crops, [n] * len(units), seed=0) for n in counts}
    print(f"  steps: {({n: round(statistics.mean(v), 2) for n, v in curve.items()})}", flush=True)
    spread = unit_robustness(model, crops, [128] * len(units), seed=1)
    recipe = fs.get_recipe("filterscope")
    stops = []
    for layer, filters in _units():
        history = fs.render(model, [fs.Channel(layer, f) for f in filters], recipe=recipe).history
        stops += [plateau_step(h, window, gain) for h in history]
    early = unit_robustness(model, crops, stops, seed=0)
    return {"curve": curve, "seed1": spread, "stops": stops, "early": early, "window": window, "gain": gain}


# ------------------------------------------------------------------------------------------- demo
def demo_seconds(tree: Path, python: str) -> dict:
    """``filterscope demo`` from source ``tree`` in a child process, as on a CPU without bf16 (``auto`` renders
    fp32 there: the same in every tree, including those before ``--precision`` existed)."""
    out = Path("/tmp") / f"step-rate-demo-{abs(hash(str(tree)))}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    start = time.time()
    code = ("import sys; import filterscope.runtime.precision as p; p.cpu_bf16_flags = lambda: (); "
            "from filterscope._launch import main; "
            f"sys.argv = ['filterscope', 'demo', '--out', {str(out)!r}, '--quiet']; main()")
    done = subprocess.run([python, "-c", code], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree / "src")},
                          capture_output=True, text=True, check=False)
    total = time.time() - start
    if done.returncode != 0:
        raise SystemExit(f"the demo in {tree} failed:\n{done.stderr[-2000:]}")
    first = min(p.stat().st_mtime for p in out.glob("*.png") if p.name != "chelsea.png")
    return {"seconds": total, "first_figure": first - start, "figures": len(list(out.glob("*.png"))) - 1}


# ----------------------------------------------------------------------------------------- report
def report(steps: list[dict], peak: float, layer: dict | None, study: dict | None, demo: dict) -> str:
    lines = [f"Machine: {machine()}, {torch.get_num_threads()} threads; fp32 matrix-product peak "
             f"{peak:.0f} GFLOP/s (2048², best of 5). Batch {BATCH}, channels-last, fp32. Before: the network as "
             "it is, glibc's default allocator (filterscope before issue 26); folded: batch norms folded; after: "
             "folded and freed memory kept (`keep_freed_memory`, the command line's default). Each allocator "
             "setting in its own process, alternately, best of 2.", "",
             *markdown_table(["network, layer, size", "GFLOP forward", "step before", "GFLOP/s", "of peak",
                              "folded", "after (folded, memory kept)", "GFLOP/s", "of peak", "speedup"],
                             [_step_row(r, peak) for r in steps])]
    if layer:
        n, b, a = layer["units"], layer["before"], layer["after"]
        lines += ["", *markdown_table(
            ["whole layer (Lite0 `_blocks.15`, `filterscope` recipe)", "units measured", "s/unit", "320 units",
             "mean activation"],
            [f"| before (unfolded, default allocator, {b['precision']}) | {n} | {b['per_unit']:.2f} | {b['per_unit'] * 320 / 60:.1f} min "
             f"| {b['activation']:.2f} |",
             f"| after (the command line's defaults, {a['precision']}) | {n} | {a['per_unit']:.2f} | {a['per_unit'] * 320 / 60:.1f} min "
             f"| {a['activation']:.2f} |"])]
    if study:
        curve = study["curve"]
        rows = [f"| {n} | {statistics.mean(v):.2f} | {statistics.mean(v) / statistics.mean(curve[128]):.3f} |"
                for n, v in curve.items()]
        rows.append(f"| 128, seed 1 | {statistics.mean(study['seed1']):.2f} | "
                    f"{statistics.mean(study['seed1']) / statistics.mean(curve[128]):.3f} |")
        rows.append(f"| plateau rule (window {study['window']}, gain < {study['gain']:.0%}): mean "
                    f"{statistics.mean(study['stops']):.0f} steps, {min(study['stops'])}-{max(study['stops'])} | "
                    f"{statistics.mean(study['early']):.2f} | "
                    f"{statistics.mean(study['early']) / statistics.mean(curve[128]):.3f} |")
        lines += ["", *markdown_table(["steps (12 quality units, seed 0)", "robustness", "÷ 128 steps"], rows)]
    if demo:
        lines += ["", *markdown_table(["`filterscope demo --precision fp32`", "seconds", "first figure after", "figures"],
                                      [f"| {name} | {d['seconds']:.0f} | {d['first_figure']:.0f} s | {d['figures']} |"
                                       for name, d in demo.items()])]
    return "\n".join(lines)


def _step_row(r: dict, peak: float) -> str:
    flop = 2 * r["gflop"]
    before, after = flop / r["before"], flop / r["after"]
    return (f"| {r['model']} `{r['layer']}`, {r['size']} px | {r['gflop']:.1f} | {r['before']:.3f} s | {before:.0f} | "
            f"{before / peak:.2f} | {r['folded']:.3f} s | {r['after']:.3f} s | {after:.0f} | **{after / peak:.2f}** | "
            f"{r['before'] / r['after']:.2f}× |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (small counts), writes nothing")
    parser.add_argument("--layer-units", type=int, default=32)
    parser.add_argument("--skip", nargs="*", default=[], choices=["steps", "layer", "demo", "study"])
    parser.add_argument("--demo-before", type=Path, help="another source tree whose demo to time as 'before'")
    parser.add_argument("--child", choices=["steps", "layer-before", "layer-after"], help=argparse.SUPPRESS)
    parser.add_argument("--child-arg", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--keep-freed-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_threads()
    without_bf16()
    if args.child:
        if args.keep_freed_memory:
            keep_freed_memory()
        answer = step_child(args.child_arg) if args.child == "steps" else \
            layer_child(args.child_arg, fold=args.child == "layer-after")
        print(json.dumps(answer))
        return
    print(f"{machine()}, {torch.get_num_threads()} threads", flush=True)
    peak = matmul_peak()
    steps = step_table(1 if args.quick else 2, 1 if args.quick else 2)
    keep_freed_memory()  # the study renders in this process, as the command line would
    layer = None if "layer" in args.skip else whole_layer(4 if args.quick else args.layer_units)
    study = None if "study" in args.skip or args.quick else steps_study([64, 96, 128, 192], window=16, gain=0.01)
    demo = {}
    if "demo" not in args.skip and not args.quick:
        if args.demo_before:
            demo["before"] = demo_seconds(args.demo_before.resolve(), sys.executable)
        demo["after"] = demo_seconds(Path(__file__).resolve().parents[1], sys.executable)
    table = report(steps, peak, layer, study, demo)
    print(table)
    if not args.quick:
        Path(__file__).with_name("step_rate.json").write_text(json.dumps(
            {"steps": steps, "peak": peak, "layer": layer, "study": study, "demo": demo}, indent=1))
        write_section("step-rate", table, heading="Speed II: the step against the peak, a whole layer, the demo "
                      "(benchmarks/step_rate.py)",
                      intro="`benchmarks/step_rate.py`: reproduce with `.venv/bin/python benchmarks/step_rate.py` "
                            "(about 25 minutes; keep the machine otherwise idle).")


if __name__ == "__main__":
    main()
