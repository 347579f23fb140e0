"""Model diff on the embedded networks (issue "Model diff"), over the 800 diverse photos of
``../shared/data/imagenet-sample``.

Three comparisons, each one paired pass (``fs.diff``): Lite0 against its copy with ``_blocks.15`` permuted and
rescaled (the control: CKA 1 on the diagonal, the permutation recovered exactly), Lite0 against Lite1 (two
architectures trained on the same data), and Lite0 against the alive random Lite0 (what training adds). CKA of
every block pair (debiased), and unit matching at five depths (blocks paired by relative depth). Prints the tables
and writes the numbers to ``benchmarks/RESULTS.md`` and the figures to ``benchmarks/diff-<name>.png``.

    .venv/bin/python benchmarks/diff.py            # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import filterscope as fs
from _results import PHOTOS, machine, markdown_table, sample_photos, write_section  # benchmarks/_results.py
from filterscope.compare import ModelDiff
from filterscope.compare.controls import paste, permuted_copy, plant_sticker
from filterscope.compare.diff import default_layers
from filterscope.compare.figure import diff_figure
from filterscope.plots import save_figure
from filterscope.runtime import configure_threads
from filterscope.trust.unit import unit_maxima

DEPTHS = (0.15, 0.35, 0.55, 0.75, 1.0)
TARGET = 1  # the class the planted sticker drives (goldfish)


def by_depth(a: list[str], b: list[str]) -> list[tuple[str, str]]:
    """Blocks of A and B at the same relative depths."""
    return [(a[round(d * (len(a) - 1))], b[round(d * (len(b) - 1))]) for d in DEPTHS]


def rows_of(name: str, report: ModelDiff) -> tuple[list[str], list[str]]:
    same = dict(report.same_names())
    diagonal = [same[n] for n in report.layers_a if n in same]
    best = report.best()
    layer_row = (f"| {name} | {len(report.layers_a)} x {len(report.layers_b)} | "
                 + (f"{min(diagonal):.3f} / {statistics.mean(diagonal):.3f} | " if diagonal else "- | ")
                 + f"{statistics.mean(v for _, _, v in best):.3f} | "
                 + f"{sum(a == b for a, b, _ in best)} of {len(best)} | {report.seconds:.0f} |")
    match_rows = [f"| {name} | `{m.layer_a}` ↔ `{m.layer_b}` | {m.units_a} x {m.units_b} | {m.matches[0].correlation:.2f}"
                  f" / {statistics.median(x.correlation for x in m.matches):.2f} | {m.threshold:.2f} | {m.share:.0%} | "
                  f"{len(m.buddies)} |" for m in report.matches]
    return [layer_row], match_rows


def precision_at_10(top: list[int], marked: set[int]) -> float:
    return sum(i in marked for i in top[:10]) / max(1, min(10, len(top)))


def sticker_rows(lite0: fs.LoadedModel, count: int, concepts: int) -> list[str]:
    """The planted change: Lite0's last block fine-tuned so that a sticker drives one class; the diff of the two
    over held-out photos, a quarter of them with the sticker pasted in."""
    photos = sample_photos(lite0, count)
    planted = plant_sticker(lite0, photos, TARGET)
    print(f"  planted: top-1 kept {planted.kept:.1%}, stickered photos to class {TARGET}: {planted.before:.1%} before, "
          f"{planted.after:.1%} after", flush=True)
    held = photos[1::2]
    marked = set(range(0, len(held), 4))
    images = held.clone()
    images[sorted(marked)] = paste(held[sorted(marked)], planted.patch, seed=7)
    report = fs.diff(lite0, planted.model, images, pairs=["_blocks.15"], concepts=concepts)
    split, match = report.concepts[0], report.match("_blocks.15")
    assert match is not None
    exclusive = split.exclusive("b")
    latent_p = [precision_at_10(list(split.images_of(lt.index)), marked) for lt in exclusive]
    leaning = split.leaning("b")[:20]
    leaning_p = [precision_at_10(list(split.images_of(lt.index)), marked) for lt in leaning]
    null = fs.diff(lite0, lite0, images.flip(0), layers_a=["_blocks.15"], layers_b=["_blocks.15"],
                   pairs=["_blocks.15"], concepts=concepts, seed=1).concepts[0]
    live = sum(lt.kind != "dead" for lt in null.latents)
    print(f"  null (Lite0 against itself, images reversed, seed 1): {null.count('a-only') + null.count('b-only')} "
          f"of {live} live concepts exclusive", flush=True)
    maxima = unit_maxima(planted.model, fs.layers.resolve_layer(planted.model, "_blocks.15"), images)
    changed = sorted(match.matches, key=lambda m: m.correlation)  # the least matched units of B first
    unit_p = [precision_at_10(maxima[:, m.b].argsort(descending=True)[:10].tolist(), marked) for m in changed]

    def first(values: list[float]) -> str:
        hit = next((i for i, v in enumerate(values) if v >= 0.8), None)
        return f"{hit + 1} (p@10 {values[hit]:.1f})" if hit is not None else \
            f"none of {len(values)} (best p@10 {max(values, default=0):.1f})"

    return [f"| {len(images)} ({len(marked)} stickered) | {planted.kept:.1%} | {planted.before:.1%} → "
            f"{planted.after:.1%} | {len(exclusive)} | {first(latent_p)} | {first(leaning_p)} | "
            f"{first(unit_p[:20])} | {split.fve_a:.2f} / {split.fve_b:.2f} | "
            f"{null.count('a-only') + null.count('b-only')} of {live} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800, help="photos of the sample to use (default all 800)")
    parser.add_argument("--concepts", type=int, default=1280, help="the planted change's crosscoder size")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    configure_threads()
    print(machine(), flush=True)
    photos = sorted(PHOTOS.glob("*.JPEG"))[:args.images]
    lite0 = fs.load_model("efficientnet_lite0")
    moved = permuted_copy(lite0, "_blocks.15._project_conv", "_conv_head", norm="_blocks.15._bn2", seed=1)
    blocks0 = default_layers(lite0)
    comparisons = {
        "Lite0 vs Lite0 permuted": (moved.model, [(n, n) for n in (blocks0[8], blocks0[-1])]),
        "Lite0 vs Lite1": (fs.load_model("efficientnet_lite1"), None),
        "Lite0 vs Lite0 random (alive)": (fs.load_model("efficientnet_lite0", "random"), None),
    }
    layer_rows, match_rows = [], []
    for name, (other, pairs) in comparisons.items():
        print(name, flush=True)
        pairs = pairs or by_depth(blocks0, default_layers(other))
        report = fs.diff(lite0, other, photos, pairs=pairs,
                         progress=lambda what, done, total: print(f"  {what}: {done}/{total}", end="\r", flush=True))
        if name.endswith("permuted"):
            last = report.match(blocks0[-1])
            assert last is not None
            exact = all(m.b == int(moved.permutation[m.a]) for m in last.matches)
            print(f"\n  permutation recovered exactly: {exact}", flush=True)
            name = f"{name} ({'recovered exactly' if exact else 'NOT recovered'})"
        layers, matches = rows_of(name, report)
        layer_rows += layers
        match_rows += matches
        print("\n" + "\n".join(layers + matches), flush=True)
        slug = name.split(" (")[0].lower().replace(" ", "-")
        if not args.no_write:
            save_figure(diff_figure(report), Path(__file__).parent / f"diff-{slug}.png", dpi=80)
    print("Lite0 vs Lite0 with a planted sticker", flush=True)
    planted_rows = sticker_rows(lite0, args.images, args.concepts)
    print("\n".join(planted_rows), flush=True)
    text = [f"{machine()}; {len(photos)} photos of `imagenet-sample`; linear CKA (debiased) over each image's 2 x 2 "
            "regions, unit matching over images and positions (grids pooled to the smaller, at most 14), threshold: "
            "the 99th percentile of 3 shuffled-image nulls.", "",
            *markdown_table(["comparison", "blocks", "CKA same name: min / mean", "CKA best partner (mean)",
                             "best partner is the namesake", "seconds"], layer_rows), "",
            *markdown_table(["comparison", "layers", "units", "correlation best / median", "threshold", "matched",
                             "best buddies"], match_rows), "",
            f"The planted change (Lite0's last block fine-tuned on half the photos so that a sticker drives class "
            f"{TARGET}; the diff over the other half, a quarter of them stickered; crosscoder of `_blocks.15`, "
            f"{args.concepts} concepts, k 32): the rank of the first B-only concept, of the first of the 20 concepts "
            "leaning furthest to B, and of the first of the 20 least matched units of B, whose top 10 images hold "
            "the sticker in at least 8; the null: the crosscoder of Lite0 against itself (images in reverse order, "
            "seed 1), its exclusive concepts among the live ones.", "",
            *markdown_table(["images", "top-1 kept", f"stickered photos to class {TARGET}", "B-only concepts",
                             "first B-only concept with the sticker", "first B-leaning concept with the sticker",
                             "first changed unit with the sticker", "crosscoder FVE A / B",
                             "null: exclusive concepts"], planted_rows)]
    if not args.no_write:
        write_section("diff", "\n".join(text), heading="Model diff (`benchmarks/diff.py`)",
                      intro="`benchmarks/diff.py` (about 10 minutes on 2 cores): `fs.diff` of Lite0 against its "
                            "permuted copy, Lite1 and the alive random Lite0; figures `benchmarks/diff-*.png`.")


if __name__ == "__main__":
    main()
