"""Visualization quality in numbers, side by side in one run.

On the embedded EfficientNet-Lite0, 12 units (4 filters in each of 3 layers; benchmarks/_quality.py):

1. the paper's Figure 1 claim: the same 276 Adam steps at a fixed 56 px, at a fixed 224 px, and with the
   paper's 56 → 408 px upscaling;
2. trained vs untrained weights (``--weights random``), paper recipe: the paper's claim that
   visualizations reveal training quality;
3. the named recipes (paper, lucid, filterscope, and Lucid's CPPN parameterization): the scores,
   seconds per filter, and the per-unit robustness of ``filterscope`` over ``lucid``'s; plus two scores
   no recipe was tuned on: robustness under stronger transforms and the transfer of 4 class
   visualizations to EfficientNet-Lite2;
4. the precision check: ``filterscope`` in fp32 and in bf16, seeds 0 and 1: are bf16's scores within
   fp32's own run-to-run spread? (The condition for ``--precision auto`` to pick bf16.)

Every render uses the default runtime (``--precision auto``) unless the row says otherwise. Scores (see
filterscope.metrics): activation ratio (vs the maximum over scikit-image's photos and random crops of
them), robustness (that ratio averaged over 16 random ±8 % shifts, ±10° rotations and 0.9-1.1 rescalings),
high-frequency share. Prints the tables and rewrites the quality section of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/quality.py [--per-layer 4]
"""

from __future__ import annotations

import argparse
import statistics

import torch

import filterscope as fs
from _quality import CLASSES, UNITS, Scores, class_transfer, score_units, units  # benchmarks/_quality.py
from _results import machine as describe_machine
from _results import markdown_table, write_section
from filterscope.engine.recipes import RECIPES
from filterscope.engine.render import choose_runtime
from filterscope.metrics import reference_crops
from filterscope.runtime import Runtime

COLUMNS = ["variant", "activation ratio", "robustness (mean ratio under transforms)",
           "strong-transform robustness", "high-frequency share", "s/filter"]


def row(name: str, s: Scores) -> str:
    return (f"| {name} | {s.mean('ratio'):.2f} | {s.mean('robust'):.2f} | {s.mean('strong'):.2f} | {s.mean('hf'):.3f} "
            f"| {s.seconds:.2f} |")


def section(title: str, rows: dict[str, Scores]) -> list[str]:
    return [f"**{title}**", "", *markdown_table(COLUMNS, [row(n, s) for n, s in rows.items()]), ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-layer", type=int, default=4, help="filters per layer (default 4: 12 units)")
    parser.add_argument("--cppn", action="store_true", help="also the cppn recipe (about 17 more minutes on 2 cores)")
    args = parser.parse_args()
    per = args.per_layer
    trained = fs.load_model("efficientnet_lite0")
    lite2 = fs.load_model("efficientnet_lite2")
    crops = reference_crops(trained)
    paper = RECIPES["paper"]
    total = paper.total_steps
    chosen, choice = choose_runtime(trained, [fs.Channel("_blocks.15", 16).resolve(trained)] * 4, RECIPES["filterscope"])

    def run(model, recipe, reference=crops, **kwargs) -> Scores:
        scores = score_units(model, recipe, reference, per_layer=per, **kwargs)
        print(f"{recipe.name} {kwargs}: robust {scores.mean('robust'):.2f} hf {scores.mean('hf'):.3f} "
              f"{scores.seconds:.2f} s/filter", flush=True)
        return scores

    figure1 = {
        f"fixed 56 px, {total} steps": run(trained, paper.replace(scales=1, steps=total)),
        f"fixed 224 px, {total} steps": run(trained, paper.replace(size=224, scales=1, steps=total)),
        f"56→408 px upscaling (paper), {total} steps": run(trained, paper),
    }
    random = fs.load_model("efficientnet_lite0", "random")
    training = {"trained weights": figure1[f"56→408 px upscaling (paper), {total} steps"],
                "random weights (seed 0)": run(random, paper, reference_crops(random))}
    recipes = {"paper": training["trained weights"]}
    for name in ("lucid", "filterscope", *(("cppn",) if args.cppn else ())):
        recipes[name] = run(trained, RECIPES[name])
    transfers = {name: class_transfer(trained, lite2, RECIPES[name]) for name in ("paper", "lucid", "filterscope")}

    precision = {}
    for p in ("fp32", "bf16"):
        for seed in (0, 1):
            precision[(p, seed)] = run(trained, RECIPES["filterscope"], runtime=Runtime(precision=p), seed=seed)

    count = len(units(per))
    lines = [f"efficientnet_lite0, {count} units ({', '.join(f'`{k}` {v[:per]}' for k, v in UNITS.items())}), seed 0; "
             f"{describe_machine()}, {torch.get_num_threads()} threads; default runtime: {chosen.precision} "
             f"({choice.reason}). Scores are means over the units; the activation ratio and robustness of the random "
             "network are relative to its own maximum over the same photos. Strong-transform robustness: the "
             "activation ratio under ±16 % shifts, ±20° rotations and 0.8-1.2 scale (no recipe was tuned on it).", ""]
    lines += section("Figure 1 claim: fixed size vs upscaling (paper recipe otherwise)", figure1)
    lines += section("Trained vs untrained network (paper recipe)", training)
    lines += section("Named recipes", recipes)

    lines += ["**Class visualizations seen by another network** (4 classes rendered on Lite0: "
              f"{', '.join(CLASSES.values())}; EfficientNet-Lite2's probability for the class rendered, and how "
              "many it ranks first)", "",
              *markdown_table(["recipe", "Lite2 probability (mean)", "Lite2 top-1", "s/class"],
                              [f"| {n} | {statistics.mean(t['probability']):.2f} | {t['top1']}/{len(CLASSES)} | "
                               f"{t['s/class']:.1f} |" for n, t in transfers.items()]), ""]

    ours, lucid = recipes["filterscope"], recipes["lucid"]
    ratios = [a / b for a, b in zip(ours.robust, lucid.robust)]
    lines += ["**Per unit: `filterscope` ÷ `lucid`**", "",
              *markdown_table(["unit", "robustness lucid", "robustness filterscope", "ratio", "high-frequency share "
                               "lucid / filterscope"],
                              [f"| `{layer}` {unit} | {lucid.robust[i]:.2f} | {ours.robust[i]:.2f} | {ratios[i]:.2f} | "
                               f"{lucid.hf[i]:.3f} / {ours.hf[i]:.3f} |" for i, (layer, unit) in enumerate(units(per))]),
              ""]
    robust_x, time_x = ours.mean("robust") / lucid.mean("robust"), ours.seconds / lucid.seconds
    lines.append(f"Target for `filterscope` vs `lucid`: robustness {ours.mean('robust'):.2f} vs {lucid.mean('robust'):.2f} "
                 f"= **{robust_x:.2f}×** ({'met' if robust_x >= 1.2 else 'not met'}: at least 1.2×; per unit "
                 f"{min(ratios):.2f}-{max(ratios):.2f}, median {statistics.median(ratios):.2f}, "
                 f"**{sum(r > 1 for r in ratios)} of {len(ratios)} units higher**, {sum(r >= 1.2 for r in ratios)} "
                 f"at 1.2× or more); high-frequency share {ours.mean('hf'):.3f} vs {lucid.mean('hf'):.3f} "
                 f"({'met' if ours.mean('hf') <= lucid.mean('hf') else 'not met'}); time {ours.seconds:.2f} vs "
                 f"{lucid.seconds:.2f} s/filter = **{time_x:.2f}×** ({'met' if time_x <= 0.25 else 'not met'}: at most "
                 "0.25).")
    lines.append("")

    lines += ["**Precision: `filterscope` in fp32 and bf16, two seeds**", "",
              *markdown_table(COLUMNS, [row(f"{p}, seed {seed}", s) for (p, seed), s in precision.items()]), ""]
    verdicts = []
    for key, label, higher in (("robust", "robustness", True), ("hf", "high-frequency share", False),
                               ("strong", "strong-transform robustness", True)):
        f0, f1 = precision[("fp32", 0)].mean(key), precision[("fp32", 1)].mean(key)
        b0, b1 = precision[("bf16", 0)].mean(key), precision[("bf16", 1)].mean(key)
        spread, fp32, bf16 = abs(f0 - f1), (f0 + f1) / 2, (b0 + b1) / 2
        # as good: not worse than fp32 by more than fp32's own seed-to-seed spread
        good = bf16 >= fp32 - spread if higher else bf16 <= fp32 + spread
        verdicts.append(f"{label}: bf16 {bf16:.3f} vs fp32 {fp32:.3f}, fp32's own seed-to-seed spread {spread:.3f} "
                        f"({'as good' if good else 'worse'}{'' if abs(bf16 - fp32) <= spread else ', outside the spread'})")
    lines.append("bf16 vs fp32: " + "; ".join(verdicts) + ".")
    text = "\n".join(lines)
    print(text)
    write_section("quality", text, heading="Visualization quality",
                  intro="`benchmarks/quality.py`: reproduce with `.venv/bin/python benchmarks/quality.py` (about 25 "
                        "minutes on 2 cores).")


if __name__ == "__main__":
    main()
