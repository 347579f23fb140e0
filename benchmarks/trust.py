"""Trust scores measured (issue "Can this picture be trusted", sections Honest baselines, Performance, Done when):

1. **2-AFC scores** of 20 units of EfficientNet-Lite0 ``_blocks.15`` (units 0, 8, ..., 152) over 300 crops of
   scikit-image's colour photos (``filterscope.demo.write_reference_set``: the only photos offline), judged in
   EfficientNet-Lite2's pooled features: with renders of each named recipe as references, with the natural
   exemplars (Borowski's condition), with random references (the control), and for the units of the random
   Lite0 (batch norms re-estimated) with exemplars. Mean ± standard deviation over the 20 units, and the
   spread over three seeds of the tasks' draws.
2. **Path similarity**: the share of earlier layers where each recipe's render is closer to the exemplars than
   random images are, and how many units are flagged ``another-path``.
3. **Time per unit** for scores and description with the dataset's features cached (target: 2 s on 2 cores),
   and for the first unit of the layer (which computes the shared features).
4. **Random Lite0 alive**: the smallest root-mean-square activation over all layers, default statistics against
   re-estimated ones, and the activations a render reaches on random and trained ``_blocks.15``.

    .venv/bin/python benchmarks/trust.py         # about 25 minutes; prints, rewrites its section of RESULTS.md
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import filterscope as fs
from _results import machine, markdown_table, write_section  # benchmarks/_results.py
from filterscope.analysis import prepare_image
from filterscope.demo import write_reference_set
from filterscope.runtime import configure_threads
from filterscope.trust import TrustData, independent_network, unit_trust
from filterscope.trust.unit import _maxima
from filterscope.zoo.calibration import activation_scales, photo_views

LAYER = "_blocks.15"
UNITS = list(range(0, 160, 8))
IMAGES = 300
RECIPES = ("paper", "lucid", "filterscope")
SEEDS = (0, 1, 2)


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def scores_of(model: fs.LoadedModel, pictures: torch.Tensor, judge, renders: dict[str, dict[int, torch.Tensor]]
              ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]], list[float], float]:
    """Each kind of reference's scores over the units (seed 0), its mean over the units for each seed, the path
    shares per recipe (seed 0), the time per unit with the features cached, and the first unit's time."""
    ref = fs.resolve_layer(model, LAYER)
    values = _maxima(model, ref, pictures, None)
    scores: dict[tuple[int, str], list[float]] = {}
    shares: dict[str, list[float]] = {}
    times: list[float] = []
    first = 0.0
    for seed in SEEDS:
        data = TrustData(model, ref, values, lambda idx: pictures[list(idx)], judge, seed=seed)
        names: list[str | None] = list(renders) if seed == 0 else list(renders)[:1]
        for n, unit in enumerate(UNITS):
            for name in names or [None]:
                started = time.perf_counter()
                record = unit_trust(data, unit, renders[name][unit] if name else None)
                took = time.perf_counter() - started
                main = name == (names[0] if names else None)
                if seed == 0 and main and n == 0:
                    first = took
                elif seed == 0 and main:
                    times.append(took)
                for s in record.afc:
                    if s.references == "renders":
                        scores.setdefault((seed, f"renders ({name})"), []).append(s.score)
                    elif main:
                        scores.setdefault((seed, s.references), []).append(s.score)
                if seed == 0 and name and record.paths is not None:
                    shares.setdefault(name, []).append(record.paths.share)
    per_kind = {key: found for (seed, key), found in scores.items() if seed == 0}
    seed_means: dict[str, list[float]] = {}
    for (_, key), found in scores.items():
        seed_means.setdefault(key, []).append(statistics.mean(found))
    return per_kind, seed_means, shares, times, first


def render_units(model: fs.LoadedModel, recipe: str) -> dict[int, torch.Tensor]:
    result = fs.visualize_filters(model, LAYER, UNITS, recipe=fs.get_recipe(recipe), seed=0)
    print(f"  rendered {recipe}: {result.seconds:.0f} s, statuses {sorted(set(result.status))}", flush=True)
    return {u: result.images[i:i + 1] for i, u in enumerate(UNITS)}


def alive_rows(trained: fs.LoadedModel) -> list[str]:
    rows = []
    views = photo_views(trained.preprocessing, crops_per_image=1, seed=9)
    for label, model in (("random, default batch-norm statistics", fs.load_model("efficientnet_lite0", "random",
                                                                                 calibrate=False)),
                         ("random, statistics re-estimated on 110 photo views", fs.load_model("efficientnet_lite0",
                                                                                             "random")),
                         ("trained", trained)):
        scales = activation_scales(model.module, model.preprocessing, views)
        recipe = fs.get_recipe("paper")
        result = fs.visualize_filters(model, LAYER, [5, 6, 7], recipe=recipe, seed=0)
        rise = ", ".join(f"{float(a):.3g} → {float(b):.3g}" for a, b in zip(result.initial_values, result.values))
        rows.append(f"| {label} | {min(scales.values()):.3g} | {scales['_blocks.15._bn2']:.3g} | {rise} | "
                    f"{', '.join(result.status)} |")
    return rows


def main() -> None:
    configure_threads()
    trained = fs.load_model("efficientnet_lite0")
    random_model = fs.load_model("efficientnet_lite0", "random")
    judge = independent_network(explained=trained.name)
    print(f"{machine()}; independent network {judge.name}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_reference_set(Path(tmp) / "data", IMAGES)
        files = sorted(folder.iterdir())
        pictures = torch.stack([prepare_image(trained, f).pixels for f in files])
    renders = {name: render_units(trained, name) for name in RECIPES}
    per_kind, seed_means, shares, times, first = scores_of(trained, pictures, judge, renders)
    random_kind, random_seeds, _, _, _ = scores_of(random_model, pictures, judge, {})
    rows = []
    for key, values in per_kind.items():
        rows.append(f"| trained | {key} | {spread(values)} | {spread(seed_means[key])} |")
    for key in ("exemplars", "random"):
        rows.append(f"| random (alive) | {key} | {spread(random_kind[key])} | {spread(random_seeds[key])} |")
    path_rows = [f"| {name} | {spread(values)} | {sum(v < 0.5 for v in values)} of {len(values)} |"
                 for name, values in shares.items()]
    timing = [f"| scores and description, one unit, dataset features cached (median of {len(times)}) | "
              f"{statistics.median(times):.2f} s |", f"| the layer's first unit (computes the shared features) | "
              f"{first:.2f} s |"]
    alive = alive_rows(trained)
    table = "\n".join([
        f"Machine: {machine()}. {len(UNITS)} units of `{LAYER}` (0, 8, ..., 152), {IMAGES} crops of scikit-image's "
        f"colour photos, {judge.name} features, 200 tasks per unit and kind (9 references each, pools of the 30 "
        "strongest and 30 weakest images). Scores: mean ± standard deviation over the units (seed 0); spread: the "
        "mean over units for task seeds 0, 1, 2 (mean ± standard deviation over the seeds; renders: the paper "
        "recipe's).",
        "",
        *markdown_table(["network", "references", "2-AFC score over units", "over seeds"], rows),
        "",
        *markdown_table(["recipe", "path similarity share (mean ± sd over units)", "flagged another-path"],
                        path_rows),
        "",
        *markdown_table(["what", "seconds"], timing),
        "",
        *markdown_table(["Lite0", "smallest RMS activation (all layers)", "`_blocks.15._bn2` RMS",
                         "paper recipe, `_blocks.15` units 5, 6, 7", "status"], alive),
    ])
    print(table)
    write_section("trust", table, heading="Trust scores (benchmarks/trust.py)",
                  intro="Per-unit faithfulness scores against their controls, their cost, and the random baseline "
                        "made alive. Reproduce: `.venv/bin/python benchmarks/trust.py` (about 25 minutes).")


if __name__ == "__main__":
    sys.exit(main())
