"""What the paper's recipe costs on this machine, and what batching filters saves.

Times the full paper recipe (56 → 408 px, 276 Adam steps) on the embedded EfficientNet-Lite0 for a
middle and a deep layer: N filters one at a time vs the same N filters in one batch, side by side in
one run. Prints a table and writes it into benchmarks/RESULTS.md (between the recipe-cost markers).

    .venv/bin/python benchmarks/recipe_cost.py [--filters 4]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

import filterscope as fs
from _results import write_section  # benchmarks/_results.py


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filters", type=int, default=4, help="filters per layer (default 4)")
    args = parser.parse_args()
    model = fs.load_model("efficientnet_lite0")
    rows = []
    for layer in ("_blocks.8", "_blocks.15"):
        filters = list(range(args.filters))
        one_by_one = sum(seconds(lambda f=f: fs.visualize_filters(model, layer, [f])) for f in filters)
        batched = seconds(lambda: fs.visualize_filters(model, layer, filters))
        rows.append((layer, one_by_one / len(filters), batched / len(filters), one_by_one / batched))
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    lines = [
        f"Paper recipe (56→408 px, 276 steps), efficientnet_lite0, {args.filters} filters per layer; {machine}.",
        "",
        "| layer | s/filter one by one | s/filter batched | speedup |",
        "|---|---|---|---|",
        *[f"| `{layer}` | {a:.1f} | {b:.1f} | {r:.2f}× |" for layer, a, b, r in rows],
    ]
    table = "\n".join(lines)
    print(table)
    write_section('recipe-cost', table, heading="Cost of the paper's recipe",
                  intro='`benchmarks/recipe_cost.py`: reproduce with `.venv/bin/python benchmarks/recipe_cost.py`.')


if __name__ == "__main__":
    main()
