"""Activation atlases, measured (issue "Activation atlas", sections Performance and Quality).

1. **Collection overhead.** Images per second of the exemplar pass of ``_blocks.15`` with and without the map's
   samples (a seeded position per image and its attribution to the image's top 5 classes: the network then runs
   to its output, with a backward pass from 5 logits to the layer), alternating, on the first 1,000 images.
   Target: at most 10 % slower.
2. **End to end.** A 20 x 20 map of Lite0 ``_blocks.15`` over 10,000 images (random crops of scikit-image's
   chelsea, coffee, rocket and astronaut photos, 30-100 % of the shorter side, 224 px JPEGs): the pass with
   collection, the layout, the icons; every default (torchdr UMAP, cosine, 50 neighbours, min_dist 0.05; icons
   with the ``filterscope`` recipe at 96 px). Target: at most 20 minutes; icons within 1.1x the time of
   rendering as many units (measured on 16 units of ``_blocks.15`` with the same recipe, size and batch).
3. **Layouts** of the collected 10,000 x 320 vectors: torchdr's UMAP against umap-learn's (when installed) and
   scikit-learn's t-SNE: seconds and trustworthiness (k = 10, cosine, on a seeded subset of 3,000). Target for
   the chosen one: 60 s and 0.9.
4. **Quality.** Each icon's activation at its centre: cosine with its cell's mean vector (target: at least
   0.5); cells labelled with the class of most of their members: the photos' known classes (chelsea: a cat,
   ImageNet 281-285; coffee: 504, 967, 968; rocket: 657, 812; astronaut: none), the share of cells whose label
   is the known class of the photo most of its members come from, against chance (the same with the labels
   shuffled among the cells, 1,000 times).

    .venv/bin/python benchmarks/activation_atlas.py            # about 20 minutes; rewrites its RESULTS.md section
    .venv/bin/python benchmarks/activation_atlas.py --quick    # 1,000 images, 8 x 8: a check that it runs
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import filterscope as fs
from _results import machine, markdown_table, write_section  # benchmarks/_results.py
from filterscope.atlas.build import build_atlas
from filterscope.maps import ActivationMap, MapSettings
from filterscope.maps.icons import icon_recipe
from filterscope.maps.layout import lay_out
from filterscope.runtime import configure_threads

LAYER = "_blocks.15"
PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")
KNOWN = {"chelsea": set(range(281, 286)), "coffee": {504, 967, 968}, "rocket": {657, 812}}


def dataset(folder: Path, count: int, seed: int = 0) -> list[str]:
    """``count`` crops, round-robin over :data:`PHOTOS`; returns each image's photo name, by index."""
    import skimage.data

    photos = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTOS]
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        k = i % len(photos)
        photo = photos[k]
        w, h = photo.size
        side = int(min(w, h) * rng.uniform(0.3, 1.0))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = photo.crop((x, y, x + side, y + side)).resize((224, 224), Image.Resampling.LANCZOS)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(folder / f"crop{i:05d}.jpg", quality=90)
        names.append(PHOTOS[k])
    return names


def overhead(model: fs.LoadedModel, images: Path, work: Path, rounds: int) -> tuple[float, float]:
    """Pass images/s without and with the map's samples (medians of ``rounds`` alternating runs)."""
    rates: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for collect in (False, True):
            folder = work / f"overhead-{r}-{collect}"
            if collect:
                _pass_only(model, folder, images)
            else:
                build_atlas(folder, model, LAYER, recipes=(), dataset=images, circuits=False, trust=False)
            rates[collect].append(_rate(folder))
    return statistics.median(rates[False]), statistics.median(rates[True])


def _pass_only(model: fs.LoadedModel, folder: Path, images: Path) -> None:
    """The exemplar pass with the map's samples, stopping before the layout (the collection is what's timed)."""
    from filterscope.atlas import build as build_module

    original = build_module._Build.map_stage
    build_module._Build.map_stage = lambda *args, **kwargs: None  # type: ignore[method-assign]
    try:
        build_atlas(folder, model, LAYER, recipes=(), dataset=images, circuits=False, trust=False, maps=True)
    finally:
        build_module._Build.map_stage = original  # type: ignore[method-assign]


def _rate(folder: Path) -> float:
    with fs.Atlas(folder) as atlas:
        record = atlas.latest_pass(atlas.layer(atlas.model(), LAYER).id)
        return record.images / record.seconds


def layouts(vectors: np.ndarray) -> list[tuple[str, float, float]]:
    from sklearn.manifold import trustworthiness

    sub = np.random.default_rng(0).choice(len(vectors), min(3000, len(vectors)), replace=False)

    def trust(coords: np.ndarray) -> float:
        return float(trustworthiness(vectors[sub], coords[sub], n_neighbors=10, metric="cosine"))

    rows = []
    for name, run in (("torchdr UMAP (filterscope's)", lambda: lay_out(vectors, seed=0)),
                      ("umap-learn UMAP (first call: numba compiles)", lambda: _umap_learn(vectors)),
                      ("scikit-learn t-SNE", lambda: lay_out(vectors, method="tsne", seed=0))):
        started = time.perf_counter()
        try:
            coords = run()
        except ImportError:
            rows.append((name + ": not installed", float("nan"), float("nan")))
            continue
        rows.append((name, time.perf_counter() - started, trust(coords)))
    return rows


def _umap_learn(vectors: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import umap

        return np.asarray(umap.UMAP(n_neighbors=50, min_dist=0.05, metric="cosine", random_state=0)
                          .fit_transform(vectors))


def units_per_second(model: fs.LoadedModel, count: int, settings: MapSettings) -> float:
    """Seconds per unit of rendering ``count`` units of the layer with the icons' recipe, size and batch."""
    recipe = icon_recipe(settings.recipe, settings.icon_size)
    started = time.perf_counter()
    fs.render(model, [fs.channel(LAYER, u) for u in range(count)], recipe=recipe, seed=0, batch_size=8)
    return (time.perf_counter() - started) / count


def labels_vs_known(found: ActivationMap, names: list[str], seed: int = 0) -> tuple[float, float, int]:
    """Share of labelled cells whose label is the known class of their members' majority photo; chance."""
    judged = []
    for c in found.cells:
        photos = [names[int(found.places[m, 0])] for m in c.members]
        majority = max(set(photos), key=photos.count)
        if majority in KNOWN and c.label is not None:
            judged.append((c.label, majority))
    if not judged:
        return float("nan"), float("nan"), 0
    hit = float(np.mean([label in KNOWN[photo] for label, photo in judged]))
    rng = np.random.default_rng(seed)
    labels = np.array([label for label, _ in judged])
    chance = float(np.mean([np.mean([label in KNOWN[photo] for label, (_, photo) in zip(rng.permutation(labels),
                                                                                          judged)])
                            for _ in range(1000)]))
    return hit, chance, len(judged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    configure_threads()
    count, grid, rounds = (1000, 8, 1) if args.quick else (10000, 20, 2)
    model = fs.load_model("efficientnet_lite0")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = work / "images"
        images.mkdir()
        started = time.perf_counter()
        names = dataset(images, count)
        print(f"{count} images written in {time.perf_counter() - started:.0f} s")
        first = work / "first"
        first.mkdir()
        for path in sorted(images.iterdir())[:1000]:
            (first / path.name).symlink_to(path)
        bare, collecting = overhead(model, first, work, rounds)
        print(f"pass: {bare:.1f} images/s without samples, {collecting:.1f} with")
        settings = MapSettings(grid=grid)
        summary = build_atlas(work / "atlas", model, LAYER, recipes=(), dataset=images, circuits=False, trust=False,
                              maps=settings)
        with fs.Atlas(work / "atlas") as atlas:
            found = atlas.map(LAYER)
            record = atlas.maps_of_layer(atlas.layer(atlas.model(), LAYER).id)[0]
            pass_seconds = atlas.latest_pass(atlas.layer(atlas.model(), LAYER).id).seconds
            samples = atlas.map_samples_by_id(record.samples_id)
            vectors = np.load(work / "atlas" / samples.vectors_file)
        layout_seconds = record.seconds or 0.0
        icon_seconds = summary.map_seconds - layout_seconds
        per_icon = icon_seconds / max(summary.icons, 1)
        per_unit = units_per_second(model, 16, settings)
        print(f"end to end {summary.seconds:.0f} s: pass {pass_seconds:.0f} s, layout {layout_seconds:.0f} s, "
              f"{summary.icons} icons {icon_seconds:.0f} s ({per_icon:.2f} s each; units {per_unit:.2f} s each)")
        compared = layouts(vectors)
        for name, seconds, trust in compared:
            print(f"{name}: {seconds:.1f} s, trustworthiness {trust:.3f}")
        cosines = np.array([c.cosine for c in found.cells if c.cosine is not None])
        hit, chance, judged = labels_vs_known(found, names)
        print(f"icon cosine: min {cosines.min():.2f}, median {np.median(cosines):.2f}, "
              f"{(cosines >= 0.5).mean():.0%} at least 0.5; labels {hit:.2f} vs chance {chance:.2f} ({judged} cells)")
        found.figure(cell=48).save(work / "map.png")
        if not args.quick:
            Path("docs/images").mkdir(parents=True, exist_ok=True)
            found.figure(cell=48).save("docs/images/activation_atlas.png")
    lines = [f"Machine: {machine()}. {count:,} images, {LAYER} of EfficientNet-Lite0, {grid}x{grid} grid; "
             f"torch threads {torch.get_num_threads()}.", ""]
    lines += markdown_table(["measure", "value", "target"], [
        f"| exemplar pass, images/s without / with samples (first 1,000 images, medians of {rounds}) | "
        f"{bare:.1f} / {collecting:.1f} ({collecting / bare:.2f}) | ≥ 0.90 |",
        f"| end to end (pass, layout, icons) | {summary.seconds / 60:.1f} min | ≤ 20 min |",
        f"| pass with collection / layout / icons | {pass_seconds:.0f} s / {layout_seconds:.0f} s / "
        f"{icon_seconds:.0f} s | |",
        f"| seconds per icon / per unit rendered alike (16 units) | {per_icon:.2f} / {per_unit:.2f} "
        f"({per_icon / per_unit:.2f}) | ≤ 1.10 |",
        f"| cells kept / samples | {len(found.cells)} / {samples.count:,} | |",
        f"| layout trustworthiness (k = 10, 2,000 samples) | {found.trustworthiness:.3f} | ≥ 0.9 |",
        f"| icon cosine with the cell's mean: min / median / share ≥ 0.5 | {cosines.min():.2f} / "
        f"{np.median(cosines):.2f} / {(cosines >= 0.5).mean():.0%} | ≥ 0.5 |",
        f"| cells labelled with their members' known class ({judged} cells) / chance | {hit:.2f} / {chance:.2f} | "
        "far above chance |"])
    lines += ["", *markdown_table(["layout of the collected vectors", "seconds", "trustworthiness (k = 10, 3,000)"],
                                  [f"| {name} | {seconds:.1f} | {trust:.3f} |" for name, seconds, trust in compared])]
    table = "\n".join(lines)
    print(table)
    if not args.quick:
        write_section("activation-atlas", table, heading="Activation atlas (benchmarks/activation_atlas.py)",
                      intro="Collection in the exemplar pass, the layout, the icons, end to end; quality of the map.")


if __name__ == "__main__":
    main()
