"""Should Lucid's redirected ReLU gradient (``relu_override_steps``) be on by default? Measured.

Two models, each unit rendered twice from the same seed, without and with the override (16 steps):

1. the embedded EfficientNet-Lite0, the 12 units of ``quality.py``, the paper's recipe: how many start
   at exactly 0, and the mean scores (activation ratio, robustness, high-frequency share) and time;
2. a small grayscale CNN trained on scikit-learn's digits (tests/helpers/anymodels.py), all 32 units of
   its last ReLU, the paper's recipe scaled to its 28 px input: how many units start at 0, how many of
   those rise above 0 with and without the override.

    .venv/bin/python benchmarks/relu_override.py            # prints, rewrites its section of RESULTS.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import filterscope as fs
from _results import machine, markdown_table, write_section  # benchmarks/_results.py
from filterscope.runtime import configure_threads
from quality import UNITS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.helpers
STEPS = 16


def lite0_rows(recipe: fs.Recipe) -> list[str]:
    model = fs.load_model("efficientnet_lite0")
    crops = fs.reference_crops(model)
    rows = []
    for label, variant in (("off", recipe), (f"first {STEPS} steps", recipe.replace(relu_override_steps=STEPS))):
        scores, zeros, seconds = [], 0, 0.0
        for layer, filters in UNITS.items():
            start = time.perf_counter()
            result = fs.visualize_filters(model, layer, filters, recipe=variant, seed=0)
            seconds += time.perf_counter() - start
            zeros += int((result.initial_values == 0).sum())
            for i, objective in enumerate(result.objectives):
                scores.append(fs.score(model, objective, result.images[i:i + 1], reference=crops, samples=16)[0])
        count = len(scores)
        rows.append(f"| Lite0, 12 units, paper recipe | {label} | {zeros}/{count} | "
                    f"{statistics.mean(q.activation_ratio for q in scores):.2f} | "
                    f"{statistics.mean(q.robustness for q in scores):.2f} | "
                    f"{statistics.mean(q.high_frequency_share for q in scores):.3f} | {seconds / count:.1f} |")
        print(rows[-1], flush=True)
    return rows


def digits_rows(recipe: fs.Recipe) -> list[str]:
    from tests.helpers.anymodels import digits

    model = digits()
    rows = []
    for label, variant in (("off", recipe), (f"first {STEPS} steps", recipe.replace(relu_override_steps=STEPS))):
        start = time.perf_counter()
        result = fs.visualize_filters(model, "relu3", list(range(32)), recipe=variant, seed=0)
        seconds = (time.perf_counter() - start) / 32
        zero = result.initial_values == 0
        rescued = int((zero & (result.values > 0)).sum())
        rows.append(f"| digits CNN, 32 units, paper recipe at 28 px | {label} | {int(zero.sum())}/32 | "
                    f"{rescued} of them rise above 0 | mean final activation "
                    f"{float(result.values.mean()):.2f} | | {seconds:.2f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 steps per scale; write nothing")
    args = parser.parse_args()
    configure_threads()
    recipe = fs.PAPER_RECIPE.replace(steps=2) if args.quick else fs.PAPER_RECIPE
    rows = [*digits_rows(recipe), *lite0_rows(recipe)]
    table = "\n".join([
        f"{machine()}; seed 0; override = Lucid's redirected ReLU gradient for the first {STEPS} Adam steps.",
        "",
        *markdown_table(["model", "override", "units at exactly 0 on the noise", "activation ratio", "robustness",
                         "high-frequency share", "s/filter"], rows),
    ])
    print(table)
    if not args.quick:
        write_section("relu-override", table, heading="The ReLU-gradient override",
                      intro="`benchmarks/relu_override.py`: reproduce with `.venv/bin/python benchmarks/relu_override.py`.")


if __name__ == "__main__":
    main()
