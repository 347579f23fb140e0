"""Visualization quality in numbers, side by side in one run.

On the embedded EfficientNet-Lite0, 12 units (4 filters in each of 3 layers):

1. the paper's Figure 1 claim: the same 276 Adam steps at a fixed 56 px, at a fixed 224 px, and with the
   paper's 56 → 408 px upscaling;
2. trained vs untrained weights (``--weights random``), paper recipe: the paper's claim that
   visualizations reveal training quality;
3. every named recipe (paper, lucid, filterscope): the three scores and seconds per filter.

Scores (see filterscope.metrics): activation ratio (vs the maximum over scikit-image's photos and
random crops of them), robustness (that ratio averaged over 16 random small translations, rotations and
rescalings: the "robustness-weighted activation ratio"), high-frequency share. Prints the tables and
rewrites the quality section of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/quality.py [--per-layer 4]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import filterscope as fs
from _results import machine as describe_machine
from _results import write_section  # benchmarks/_results.py
from filterscope.metrics import reference_crops, score
from filterscope.recipes import RECIPES

UNITS = {"_blocks.8": [2, 9, 34, 91], "_blocks.11": [3, 30, 77, 150], "_blocks.15": [16, 164, 257, 306]}


def run(model, recipe, per_layer: int, crops) -> dict:
    """Render every unit with ``recipe`` (one batch per layer) and score it."""
    seconds, scores = 0.0, []
    for layer, filters in UNITS.items():
        filters = filters[:per_layer]
        start = time.perf_counter()
        result = fs.visualize_filters(model, layer, filters, recipe=recipe, seed=0)
        seconds += time.perf_counter() - start
        for i, objective in enumerate(result.objectives):
            scores.append(score(model, objective, result.images[i:i + 1], reference=crops, samples=16)[0])
    count = len(scores)
    return {
        "s/filter": seconds / count,
        "ratio": statistics.mean(q.activation_ratio for q in scores),
        "robust": statistics.mean(q.robustness for q in scores),
        "hf": statistics.mean(q.high_frequency_share for q in scores),
        "robust_min": min(q.robustness for q in scores),
    }


def table(title: str, rows: dict[str, dict]) -> list[str]:
    lines = [f"**{title}**", "",
             "| variant | activation ratio | robustness (mean ratio under transforms) | high-frequency share | s/filter |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['ratio']:.2f} | {r['robust']:.2f} | {r['hf']:.3f} | {r['s/filter']:.1f} |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-layer", type=int, default=4, help="filters per layer (default 4: 12 units)")
    args = parser.parse_args()
    trained = fs.load_model("efficientnet_lite0")
    crops = reference_crops(trained)
    paper = RECIPES["paper"]
    total = paper.total_steps

    figure1 = {
        f"fixed 56 px, {total} steps": run(trained, paper.replace(scales=1, steps=total), args.per_layer, crops),
        f"fixed 224 px, {total} steps": run(trained, paper.replace(size=224, scales=1, steps=total), args.per_layer,
                                             crops),
        f"56→408 px upscaling (paper), {total} steps": run(trained, paper, args.per_layer, crops),
    }
    random = fs.load_model("efficientnet_lite0", "random")
    training = {
        "trained weights": figure1[f"56→408 px upscaling (paper), {total} steps"],
        "random weights (seed 0)": run(random, paper, args.per_layer, reference_crops(random)),
    }
    recipes = {"paper": training["trained weights"]}
    for name in ("lucid", "filterscope"):
        recipes[name] = run(trained, RECIPES[name], args.per_layer, crops)

    units = sum(len(f[:args.per_layer]) for f in UNITS.values())
    machine = f"{describe_machine()}, {torch.get_num_threads()} threads"
    lines = [f"efficientnet_lite0, {units} units ({', '.join(f'`{k}` {v[:args.per_layer]}' for k, v in UNITS.items())}), "
             f"seed 0; {machine}. Scores are means over the units; the activation ratio and robustness of the "
             "random network are relative to its own maximum over the same photos.", ""]
    lines += table("Figure 1 claim: fixed size vs upscaling (paper recipe otherwise)", figure1)
    lines += table("Trained vs untrained network (paper recipe)", training)
    lines += table("Named recipes", recipes)
    ours, lucid = recipes["filterscope"], recipes["lucid"]
    lines.append(f"Target for `filterscope` vs `lucid`: robustness {ours['robust']:.2f} vs {lucid['robust']:.2f} "
                 f"({'met' if ours['robust'] > lucid['robust'] else 'not met'}), high-frequency share "
                 f"{ours['hf']:.3f} vs {lucid['hf']:.3f} ({'met' if ours['hf'] < lucid['hf'] else 'not met'}), time "
                 f"{ours['s/filter']:.1f} vs {lucid['s/filter']:.1f} s/filter, ratio {ours['s/filter'] / lucid['s/filter']:.2f} "
                 f"({'met' if ours['s/filter'] <= lucid['s/filter'] / 2 else 'not met'}: at most 0.5).")
    text = "\n".join(lines)
    print(text)
    write_section('quality', text, heading='Visualization quality',
                  intro='`benchmarks/quality.py`: reproduce with `.venv/bin/python benchmarks/quality.py` (about 15 minutes on 2 cores).')


if __name__ == "__main__":
    main()
