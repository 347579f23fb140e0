"""Same work, two source trees: is a refactoring free? Times and results of filterscope at two versions.

Runs the timing recipe of ``speed.py`` (the paper's 12 scales with 2/3 steps) on ResNet34 (random weights)
and EfficientNet-Lite0, 2 filters per layer, fp32 and bf16, in child processes that alternate between
the two trees (``PYTHONPATH=TREE/src``), ``--repeats`` times each; reports the median seconds per filter
and whether the images are bit-identical between the trees. ``--atlas`` also builds one small atlas with each
tree (EfficientNet-Lite0, two layers, scores, an exemplar pass over scikit-image's photos, fp32) and compares
everything it recorded: render pixels and keys, values and scores, statistics, exemplars and crops, and the
build's time.

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


ATLAS_CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from PIL import Image
import filterscope as fs
from filterscope.runtime import configure_threads
configure_threads()
out, photos = Path(sys.argv[1]), Path(sys.argv[2])
model = fs.load_model("efficientnet_lite0")
recipe = fs.get_recipe("paper").replace(scales=3, steps=3, name="snapshot")
start = time.perf_counter()
fs.build_atlas(out, model, ["_blocks.4", "_blocks.10"], units=[0, 3, 7], recipes=[recipe], dataset=photos,
               exemplars=4, runtime=fs.Runtime(precision="fp32"))
seconds = time.perf_counter() - start
atlas = fs.Atlas(out, create=False)
store = getattr(atlas, "store", atlas)  # the records' queries: on the store since Architecture III, on the atlas before
snap = {}
for layer in ("_blocks.4", "_blocks.10"):
    for unit in (0, 3, 7):
        u = atlas.unit(layer, unit)
        r = u.renders[0]
        pixels = np.asarray(Image.open(out / r.file)).tolist()
        s = u.stats
        snap[f"{layer}/{unit}"] = {
            "file": r.file, "pixels": pixels, "status": r.status,
            "values": [r.initial_activation, r.final_activation, r.activation_ratio, r.robustness,
                       r.high_frequency_share],
            "stats": [s.mean, s.std, s.max, s.min, s.fraction_positive, s.images], "histogram": s.histogram,
            "exemplars": {k: [(e.image, e.value, e.y, e.x, e.box, e.source_box) for e in v]
                          for k, v in u.exemplars.items()},
            "crops": [store.exemplar_image(e.id).hex() for v in u.exemplars.values() for e in v],
            "cofiring": store.cofiring(layer, unit)}
print(json.dumps({"seconds": seconds, "snapshot": snap}))
"""


def atlas_snapshot(tree: Path, out: Path, photos: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    done = subprocess.run([sys.executable, "-c", ATLAS_CHILD, str(out), str(photos)], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _close(a: object, b: object) -> bool:
    """Equal, floats to 1e-9 relative (sums of float64 merged in another grouping)."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b


def compare_atlases(base: Path, tmp: Path) -> list[str]:
    """Build the snapshot atlas with both trees; one table row per compared part."""
    from PIL import Image
    from skimage import data

    from filterscope.data import NATURAL_IMAGES

    photos = tmp / "photos"
    photos.mkdir()
    for name in NATURAL_IMAGES[:8]:
        Image.fromarray(getattr(data, name)()).convert("RGB").save(photos / f"{name}.png")
    before, after = atlas_snapshot(base, tmp / "before", photos), atlas_snapshot(HERE, tmp / "after", photos)
    rows = []
    for part in ("file", "pixels", "status", "values", "stats", "histogram", "exemplars", "crops", "cofiring"):
        exact = all(before["snapshot"][u][part] == after["snapshot"][u][part] for u in before["snapshot"])
        close = all(_close(before["snapshot"][u][part], after["snapshot"][u][part]) for u in before["snapshot"])
        rows.append(f"| {part} | {'identical' if exact else 'within 1e-9' if close else 'DIFFERENT'} |")
    rows.append(f"| build time (s): before {before['seconds']:.1f}, after {after['seconds']:.1f} | "
                f"{after['seconds'] / before['seconds']:.2f}x |")
    return rows


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
    parser.add_argument("--atlas", action="store_true", help="also compare a small atlas built by each tree")
    parser.add_argument("--no-renders", action="store_true", help="skip the timing renders (with --atlas)")
    args = parser.parse_args()
    trees = {"before": args.base.resolve(), "after": HERE}
    rows = []
    atlas_rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.atlas:
            atlas_rows = compare_atlases(trees["before"], Path(tmp))
            print("\n".join(atlas_rows), flush=True)
        for case in ([] if args.no_renders else CASES):
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
    if atlas_rows:
        rows_table = ["", "Atlas snapshot (EfficientNet-Lite0 `_blocks.4` and `_blocks.10`, units 0, 3, 7, the paper "
                      "recipe at 3 scales of 3 steps, quality scores, exemplar pass over 8 of scikit-image's photos, "
                      "fp32), built once with each tree:", "",
                      *markdown_table(["what the atlas recorded", "before vs after"], atlas_rows)]
    else:
        rows_table = []
    table = "\n".join([
        f"Before: `{trees['before']}`; after: this tree. {machine()}; median of {args.repeats} alternating runs, "
        "each in a fresh process; timing recipe, 2 filters in one batch.",
        "",
        *markdown_table(["model", "layer", "precision", "before s/filter", "after s/filter", "after ÷ before",
                         "images bit-identical"], rows),
        *rows_table,
    ])
    print(table)
    if not args.no_write:
        write_section("compare-trees", table, heading="Refactoring check: two source trees side by side",
                      intro="`benchmarks/compare_trees.py OLD_TREE`: the same renders at two versions of the code.")


if __name__ == "__main__":
    main()
