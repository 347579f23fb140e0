"""Same work, two source trees: is a refactoring free? Times and results of filterscope at two versions.

Runs the timing recipe of ``speed.py`` (the paper's 12 scales with 2/3 steps) on ResNet34 (random weights)
and EfficientNet-Lite0, 2 filters per layer, fp32 and bf16, in child processes that alternate between
the two trees (``PYTHONPATH=TREE/src``), ``--repeats`` times each; reports the median seconds per filter
and whether the images are bit-identical between the trees.

    git worktree add /tmp/base <old-commit>
    .venv/bin/python benchmarks/compare_trees.py /tmp/base            # writes its section of RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import machine, markdown_table, write_section  # benchmarks/_results.py

CASES = [("resnet34", "random", "layer2.2.conv1"), ("resnet34", "random", "layer4.2.relu"),
         ("efficientnet_lite0", None, "_blocks.15")]
HERE = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, torch
import filterscope as fs
from filterscope.runtime import configure_threads
configure_threads()
model_name, weights, layer, precision, out = sys.argv[1:6]
model = fs.load_model(model_name, None if weights == "None" else weights)
recipe = fs.Recipe(steps=2, late_steps_factor=1.5, name="timing")
runtime = fs.Runtime(precision=precision)
fs.visualize_filters(model, layer, [0], recipe=fs.Recipe(size=32, scales=1, steps=1), runtime=runtime)  # warm-up
start = time.perf_counter()
result = fs.visualize_filters(model, layer, [0, 1], recipe=recipe, seed=0, batch_size=2, runtime=runtime)
seconds = (time.perf_counter() - start) / 2
torch.save(result.images, out)
print(json.dumps({"seconds": seconds}))
"""


def run(tree: Path, case: tuple[str, str | None, str], precision: str, out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    done = subprocess.run([sys.executable, "-c", CHILD, case[0], str(case[1]), case[2], precision, str(out)],
                          env=env, capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, help="the other source tree (a git worktree of the old commit)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    trees = {"before": args.base.resolve(), "after": HERE}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            for precision in ("fp32", "bf16"):
                times: dict[str, list[float]] = {"before": [], "after": []}
                for _ in range(args.repeats):
                    for label, tree in trees.items():  # alternate, so drifts of the machine hit both alike
                        times[label].append(run(tree, case, precision, Path(tmp) / f"{label}.pt"))
                same = torch.equal(torch.load(Path(tmp) / "before.pt"), torch.load(Path(tmp) / "after.pt"))
                before, after = statistics.median(times["before"]), statistics.median(times["after"])
                rows.append(f"| {case[0]} | `{case[2]}` | {precision} | {before:.2f} | {after:.2f} | "
                            f"{after / before:.2f} | {'yes' if same else 'NO'} |")
                print(rows[-1], flush=True)
    table = "\n".join([
        f"Before: `{trees['before']}`; after: this tree. {machine()}; median of {args.repeats} alternating runs, "
        "each in a fresh process; timing recipe, 2 filters in one batch.",
        "",
        *markdown_table(["model", "layer", "precision", "before s/filter", "after s/filter", "after ÷ before",
                         "images bit-identical"], rows),
    ])
    print(table)
    if not args.no_write:
        write_section("compare-trees", table, heading="Refactoring check: two source trees side by side",
                      intro="`benchmarks/compare_trees.py OLD_TREE`: the same renders at two versions of the code.")


if __name__ == "__main__":
    main()
