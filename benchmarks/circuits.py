"""Circuits, measured (issue "Circuits", sections Performance and Done when):

1. **Expanded weights of a whole layer pair**: EfficientNet-Lite0 ``_blocks.14`` -> ``_blocks.15`` (all 320
   output channels) and ResNet34 ``layer4.1`` -> ``layer4.2.conv2`` (all 512; random weights: the time does
   not depend on their values), the median of 3 runs each. Target: at most 10 s each on 2 cores.
2. **The causal check on the embedded model**: 20 units of ``_blocks.15`` sampled with ``random.Random(0)``,
   inputs from ``_blocks.14``, each unit's 8 top exemplars among scikit-image's photos and crops of them
   (``fs.reference_crops``, 90 views); zeroing the top 5 inputs by attribution, and by expanded weight,
   against 5 sets of 5 random inputs. Target: for at least 80 % of the units the attribution's top 5 lower
   the unit at least 3x more than random.
3. **What the atlas's Weights section costs**: the demo's atlas (``_blocks.4`` and ``_blocks.10``, 16 units
   each, the paper recipe, the 240-image reference set) built with and without circuits, each in a fresh
   process, alternating. Target: at most 10 % more.

    .venv/bin/python benchmarks/circuits.py            # about 15 minutes; prints, rewrites its section of RESULTS.md
    .venv/bin/python benchmarks/circuits.py --quick    # smaller: a check that it runs (RESULTS.md untouched)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import filterscope as fs
from _results import machine, markdown_table, write_section  # benchmarks/_results.py
from filterscope.demo import DEMO_PLAN, write_reference_set
from filterscope.runtime import configure_threads


def weights_seconds(model: fs.LoadedModel, source: str, target: str, runs: int) -> tuple[float, tuple[int, ...]]:
    times, shape = [], ()
    for _ in range(runs):
        start = time.perf_counter()
        found = fs.expanded_weights(model, source, target)
        times.append(time.perf_counter() - start)
        shape = tuple(found.weights.shape)
    return statistics.median(times), shape


def ablation_study(model: fs.LoadedModel, count: int) -> dict[str, list[float]]:
    units = random.Random(0).sample(range(320), count)
    pixels = fs.reference_crops(model)
    weights = fs.expanded_weights(model, "_blocks.14", "_blocks.15")
    ratios: dict[str, list[float]] = {"attribution": [], "expanded": []}
    for unit in units:
        found = fs.circuit(model, "_blocks.15", unit, "_blocks.14", k=5, images=pixels, exemplars=8, ablate=5,
                           draws=5, classes=False, weights=weights)
        assert found.ablation is not None
        for view in ratios:
            ratios[view].append(found.ablation.ratios[view])
        print(f"  unit {unit:3d}: attribution {found.ablation.ratios['attribution']:6.2f}x, "
              f"expanded {found.ablation.ratios['expanded']:6.2f}x, agreement {found.agreement:.0%}", flush=True)
    return ratios


BUILD = """
import json, sys, time
import filterscope as fs
from filterscope.runtime import configure_threads
configure_threads()
folder, data, units, circuits = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
model = fs.load_model("efficientnet_lite0")
start = time.perf_counter()
summary = fs.build_atlas(folder, model, ["_blocks.4", "_blocks.10"], units=range(units), recipes=["paper"],
                         dataset=data, exemplars=9, circuits=circuits)
print(json.dumps({"seconds": time.perf_counter() - start, "circuit_seconds": summary.circuit_seconds,
                  "circuits": summary.circuits}))
"""


def build_seconds(data: Path, units: int, circuits: bool, folder: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", BUILD, str(folder), str(data), str(units), "1" if circuits else "0"],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def quantiles(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"{min(values):.2f} / {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f} / {max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer units and runs; RESULTS.md is not rewritten")
    args = parser.parse_args()
    configure_threads()
    print(machine(), flush=True)
    lite0 = fs.load_model("efficientnet_lite0")
    resnet = fs.load_model("resnet34", "random")
    runs = 1 if args.quick else 3
    pairs = [("EfficientNet-Lite0", lite0, "_blocks.14", "_blocks.15"),
             ("ResNet34", resnet, "layer4.1", "layer4.2.conv2")]
    rows = []
    for name, model, source, target in pairs:
        seconds, shape = weights_seconds(model, source, target, runs)
        rows.append(f"| expanded weights, {name} `{source}` → `{target}` {shape} | {seconds:.2f} s | ≤ 10 s |")
        print(rows[-1], flush=True)
    print("causal check on _blocks.15:", flush=True)
    ratios = ablation_study(lite0, 4 if args.quick else 20)
    for view in ("attribution", "expanded"):
        values = ratios[view]
        share = sum(v >= 3 for v in values) / len(values)
        rows.append(f"| top 5 by {view} vs 5 random, {len(values)} units: ≥ 3x for | {share:.0%} "
                    f"(min / q1 / median / q3 / max: {quantiles(values)}) | {'≥ 80 %' if view == 'attribution' else '–'} |")
        print(rows[-1], flush=True)
    units = 4 if args.quick else DEMO_PLAN.atlas_units
    with tempfile.TemporaryDirectory() as tmp:
        data = write_reference_set(Path(tmp) / "data", 24 if args.quick else DEMO_PLAN.reference_images)
        builds: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for repeat in range(1 if args.quick else 2):
            for circuits in ((False, True) if repeat % 2 == 0 else (True, False)):
                found = build_seconds(data, units, circuits, Path(tmp) / f"atlas-{repeat}-{int(circuits)}")
                builds[circuits].append(found)
                print(f"  atlas build, circuits={circuits}: {found['seconds']:.1f} s "
                      f"(circuits stage {found['circuit_seconds']:.1f} s)", flush=True)
    plain = statistics.median(b["seconds"] for b in builds[False])
    with_circuits = statistics.median(b["seconds"] for b in builds[True])
    stage = statistics.median(b["circuit_seconds"] for b in builds[True])
    rows.append(f"| atlas build (2 layers × {units} units, paper recipe), with circuits ÷ without | "
                f"{with_circuits / plain:.3f} ({with_circuits:.0f} s vs {plain:.0f} s; the circuits stage "
                f"{stage:.1f} s = {stage / plain:.1%}) | ≤ 1.10 |")
    print(rows[-1], flush=True)
    table = "\n".join([f"Machine: {machine()}.", "", *markdown_table(["what", "measured", "target"], rows)])
    print(table)
    if not args.quick:
        write_section("circuits", table, heading="Circuits (benchmarks/circuits.py)",
                      intro=__doc__.split("\n\n", 1)[1].split("\n\n    ")[0])


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    main()
