"""Recipe variants tried against `lucid` on quality.py's 12 units: what each change buys, per unit.

Each variant is a recipe (a named one with some fields changed). Every run scores the variants asked for
and keeps their per-unit scores in benchmarks/recipe_variants.json (so variants measured in separate
runs, on the idle machine, are kept together); the table in benchmarks/RESULTS.md is written from that
file: means over the units, and per unit the variant's robustness divided by `lucid`'s.

    .venv/bin/python benchmarks/recipe_variants.py                  # every variant (about an hour)
    .venv/bin/python benchmarks/recipe_variants.py --only lucid,cosine-lr
    .venv/bin/python benchmarks/recipe_variants.py --table          # rewrite the table only
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import filterscope as fs
from _quality import score_units  # benchmarks/_quality.py
from _results import machine as describe_machine
from _results import markdown_table, write_section
from filterscope.engine.recipes import RECIPES, Recipe
from filterscope.engine.transforms import LUCID_TRANSFORMS, TransformStack
from filterscope.metrics import reference_crops
from filterscope.runtime import Runtime

LOG = Path(__file__).with_name("recipe_variants.json")
MATCHED = TransformStack(jitter=18, scales=(0.9, 0.95, 1.0, 1.05, 1.1), angles=tuple(float(a) for a in range(-10, 11)))
"""The robustness score's own distribution: ±8 % shifts (18 px of 224), 0.9-1.1 scale, ±10°, reflected
borders, no padding."""

# the recipes as they were before issue 15: Lucid's lr without its factor 4, and the old `filterscope`
FS = Recipe(name="filterscope", size=160, scales=2, upscale=1.4, steps=128, late_steps_factor=1.25, lr=0.05,
            weight_decay=0.0, blur=0, param="fft", decorrelate=True, transforms=LUCID_TRANSFORMS, relu_override_steps=16)
VARIANTS: dict[str, tuple[str, Recipe]] = {
    "lucid": ("Lucid's render_vis: 512 steps at 224 px, Lucid's step (lr 0.0125 here: Lucid divides its spectrum by "
              "4)", RECIPES["lucid"]),
    "lucid (before: lr 0.05)": ("the `lucid` recipe before issue 15: 4x Lucid's step", RECIPES["lucid"].replace(lr=0.05)),
    "filterscope (before)": ("160 px x 128 + 224 px x 160 steps, lr 0.05, Lucid's transforms", FS),
    "filterscope": ("the new `filterscope`: 224 px x 128 steps, lr 0.02, the score's transforms", RECIPES["filterscope"]),
}


def variant(name: str, text: str, recipe: Recipe) -> None:
    VARIANTS[name] = (text, recipe.replace(name=name))


ONE = FS.replace(size=224, scales=1, late_steps_factor=1.0)  # one scale at 224 px, lucid's parameterization
variant("matched 160", "one scale, 224 px x 160 steps, lr 0.05, the score's transforms (no padding)",
        ONE.replace(steps=160, transforms=MATCHED))
variant("matched 160 lr0.1 cos", "as above, lr 0.1 falling to 0.01 (cosine)",
        ONE.replace(steps=160, transforms=MATCHED, lr=0.1, lr_end=0.1))
variant("matched 160 lr0.2 cos", "as above, lr 0.2 falling to 0.02",
        ONE.replace(steps=160, transforms=MATCHED, lr=0.2, lr_end=0.1))
variant("lucid-transforms 136 lr0.1 cos", "Lucid's transforms (pad 12: 248 px seen), 136 steps (same "
        "compute as 160 at 224 px), lr 0.1 cosine", ONE.replace(steps=136, lr=0.1, lr_end=0.1))
variant("3 scales lr0.1 cos", "112 → 158 → 223 px, 48 + 48 + 96 steps, lr 0.1 cosine per scale, matched",
        ONE.replace(size=112, scales=3, upscale=1.415, steps=48, late_steps_factor=2.0, transforms=MATCHED, lr=0.1,
                    lr_end=0.1))
variant("2 copies 80 lr0.1 cos", "two transformed copies per step (expectation over transformations), "
        "80 steps at 224 px: the compute of 160", ONE.replace(steps=80, transforms=MATCHED, lr=0.1, lr_end=0.1,
                                                              transform_copies=2))
M136 = ONE.replace(steps=136, transforms=MATCHED)  # about a quarter of lucid's compute
variant("matched 136", "one scale, 224 px x 136 steps, lr 0.05, the score's transforms", M136)
variant("matched 136 lr0.03", "as above, lr 0.03", M136.replace(lr=0.03))
variant("matched 136 lr0.07", "as above, lr 0.07", M136.replace(lr=0.07))
variant("matched 136 decay0.75", "1/f^0.75 spectrum (more high frequencies)", M136.replace(fft_decay=0.75))
variant("matched 136 decay0.5", "1/f^0.5 spectrum", M136.replace(fft_decay=0.5))
variant("matched 136 rgb", "no color decorrelation", M136.replace(decorrelate=False))
variant("matched 136 lr0.02", "matched 136 at lr 0.02", M136.replace(lr=0.02))
variant("matched 136 lr0.0125", "matched 136 at lr 0.0125", M136.replace(lr=0.0125))
variant("2 scales lr0.03", "112 px x 96 steps, then 224 px x 112 steps, lr 0.03, matched",
        M136.replace(size=112, scales=2, upscale=2.0, steps=96, late_steps_factor=112 / 96, lr=0.03))
variant("3 scales lr0.03", "96 → 146 → 223 px, 64 + 64 + 96 steps, lr 0.03, matched",
        M136.replace(size=96, scales=3, upscale=1.53, steps=64, late_steps_factor=1.5, lr=0.03))
variant("matched 136 lr0.03 cos0.3", "matched 136 at lr 0.03 falling to 0.009 (cosine)", M136.replace(lr=0.03, lr_end=0.3))
variant("tiles2 136 lr0.03", "the image is 2 x 2 copies of one 112 px tile (a periodic texture), 136 steps at "
        "224 px, lr 0.03, matched", M136.replace(lr=0.03, tiles=2))
variant("tiles3 136 lr0.03", "3 x 3 copies of one 75 px tile", M136.replace(lr=0.03, tiles=3))
variant("tiles2 136 lr0.02", "2 x 2 tiles, lr 0.02", M136.replace(lr=0.02, tiles=2))
variant("matched 136 lr0.02 faint", "matched 136 at lr 0.02 from fainter noise (±1 instead of ±20 grey levels)",
        M136.replace(lr=0.02, noise_amplitude=2 / 255))
variant("matched 136 lr0.02 decay0.75", "matched 136 at lr 0.02, 1/f^0.75 spectrum", M136.replace(lr=0.02, fft_decay=0.75))
for _steps in (128, 256, 1024):
    variant(f"lucid {_steps} steps", f"`lucid` with {_steps} steps instead of 512", RECIPES["lucid"].replace(steps=_steps))
VARIANTS["paper"] = ("the paper's recipe: pixels, 56 → 408 px, box blur between scales", RECIPES["paper"])
variant("paper gaussian blur", "the paper's recipe with a Gaussian of the box's variance between scales",
        RECIPES["paper"].replace(blur_kind="gaussian"))
variant("filterscope (before) no ReLU override", "the old recipe without the redirected ReLU gradient",
        FS.replace(relu_override_steps=0))


def load_log() -> dict:
    return json.loads(LOG.read_text()) if LOG.exists() else {}


def table(log: dict) -> str:
    lucid = log.get("lucid")
    rows = []
    for name, entry in log.items():
        s = entry["scores"]
        mean = {k: statistics.mean(s[k]) for k in ("ratio", "robust", "strong", "hf")}
        if lucid:
            ratios = [a / b for a, b in zip(s["robust"], lucid["scores"]["robust"])]
            per_unit = (f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}), "
                        f"{sum(r > 1 for r in ratios)}/{len(ratios)}")
            time = f"{s['s/filter'] / lucid['scores']['s/filter']:.2f}"
            vs = f"{mean['robust'] / statistics.mean(lucid['scores']['robust']):.2f}"
        else:
            per_unit = time = vs = "-"
        rows.append(f"| {name} | {entry['text']} | {mean['ratio']:.2f} | {mean['robust']:.2f} | {vs} | {per_unit} | "
                    f"{mean['strong']:.2f} | {mean['hf']:.3f} | {s['s/filter']:.2f} | {time} |")
    columns = ["variant", "change", "activation ratio", "robustness", "÷ lucid", "per unit ÷ lucid: median "
               "(range), units better", "strong-transform robustness", "high-frequency share", "s/filter",
               "time ÷ lucid"]
    machines = sorted({entry["machine"] for entry in log.values()})
    return "\n".join([f"efficientnet_lite0, quality.py's 12 units, seed 0; {'; '.join(machines)}.", "",
                      *markdown_table(columns, rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="variant names separated by commas (default: all)")
    parser.add_argument("--precision", default=None, help="runtime precision (default: the default runtime)")
    parser.add_argument("--table", action="store_true", help="only rewrite the RESULTS.md table from the log")
    parser.add_argument("--list", action="store_true", help="list the variants")
    args = parser.parse_args()
    if args.list:
        for name, (text, _recipe) in VARIANTS.items():
            print(f"{name}: {text}")
        return
    log = load_log()
    if not args.table:
        names = args.only.split(",") if args.only else list(VARIANTS)
        unknown = [n for n in names if n not in VARIANTS]
        if unknown:
            parser.error(f"unknown variant(s) {unknown}; see --list")
        model = fs.load_model("efficientnet_lite0")
        crops = reference_crops(model)
        runtime = Runtime(precision=args.precision) if args.precision else None
        for name in names:
            text, recipe = VARIANTS[name]
            scores = score_units(model, recipe, crops, runtime=runtime)
            machine = f"{describe_machine()}, {torch.get_num_threads()} threads, {args.precision or 'default'} runtime"
            log[name] = {"text": text, "recipe": recipe.to_dict(), "scores": scores.to_dict(), "machine": machine}
            LOG.write_text(json.dumps(log, indent=1) + "\n")
            print(f"{name}: robust {scores.mean('robust'):.2f} strong {scores.mean('strong'):.2f} "
                  f"hf {scores.mean('hf'):.3f} ratio {scores.mean('ratio'):.2f} {scores.seconds:.2f} s/filter "
                  f"robust per unit {[round(r, 2) for r in scores.robust]}", flush=True)
    text = table(log)
    print(text)
    write_section("recipe-variants", text, heading="Recipe variants",
                  intro="`benchmarks/recipe_variants.py`: reproduce with `.venv/bin/python benchmarks/recipe_variants.py`.")


if __name__ == "__main__":
    main()
