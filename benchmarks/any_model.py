"""Any model, any input: how far the paper's recipe (scaled to each input) raises units of the test models.

The models of tests/helpers/anymodels.py (a grayscale digits CNN trained on scikit-learn's digits, a
4-channel 64 x 256 model, a 0-255 model, functional ReLUs, tuple and dict outputs, a fixed-size head),
each with four units, the paper's recipe with the ReLU override for the first 16 steps; prints the
initial and final activation and their ratio, and rewrites its section of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/any_model.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import filterscope as fs
from _results import machine, markdown_table, write_section  # benchmarks/_results.py
from filterscope.runtime import configure_threads

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.helpers
from tests.helpers import anymodels as am

CASES = [  # factory, what it is, objectives
    ("digits", "1 channel, 28 x 28, trained on digits", [f"channel(relu3, {i})" for i in (0, 5, 16, 22)]),
    ("multispectral", "4 channels, 64 x 256", [f"channel(features.3, {i})" for i in (1, 2, 7, 9)]),
    ("byte_range", "3 channels, 0-255 input", [f"channel(conv2, {i})" for i in (0, 3, 5, 6)]),
    ("functional", "F.relu in forward", [f"channel(conv2@in, {i})" for i in (0, 2, 4, 6)]),
    ("tuple_head", "a module returning a tuple", [f"channel(head[1], {i})" for i in (0, 2, 4, 5)]),
    ("dict_backbone", "a module returning a dict", [f"channel(backbone[aux], {i})" for i in (0, 1, 3, 4)]),
    ("fixed_head", "Linear head: runs only at 28 x 28", [f"class({i})" for i in (0, 1, 2)]),
]


def main() -> None:
    configure_threads()
    recipe = fs.PAPER_RECIPE.replace(relu_override_steps=16)
    rows = []
    for factory, what, objectives in CASES:
        model = getattr(am, factory)()
        result = fs.render(model, objectives, recipe=recipe, seed=0)
        for objective, before, after, status in zip(result.objectives, result.initial_values, result.values,
                                                    result.status):
            ratio = (f"{float(after) / float(before):.1f}x" if float(before) > 0 else
                     "from 0" if float(before) == 0 else "from below 0")
            shape = "x".join(map(str, result.images.shape[1:]))
            rows.append(f"| `{factory}` ({what}) | `{objective.description}` | {shape} | {float(before):.3g} | "
                        f"{float(after):.3g} | {ratio} | {status} |")
            print(rows[-1], flush=True)
    table = "\n".join([
        f"{machine()}; paper recipe scaled to each input (reference 224 px), ReLU override for the first 16 "
        "steps, seed 0.",
        "",
        *markdown_table(["model", "objective", "output (C x H x W)", "start", "end", "rise", "status"], rows),
    ])
    print(table)
    write_section("any-model", table, heading="Any model, any input",
                  intro="`benchmarks/any_model.py`: reproduce with `.venv/bin/python benchmarks/any_model.py`.")


if __name__ == "__main__":
    main()
