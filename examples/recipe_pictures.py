"""The docs' recipe comparison: the same filters with the paper's recipe and with ours.

Renders 6 filters of EfficientNet-Lite0 (two from each layer of benchmarks/quality.py) with each recipe
named on the command line, in the default runtime, scores each image (robustness: the activation ratio
under small random transforms, see filterscope.metrics) and writes one figure: a row per recipe, each
panel titled with its unit and robustness, each row with the recipe's seconds per filter.

    .venv/bin/python examples/recipe_pictures.py OUT.jpg [--recipes paper,filterscope]   (make recipe-pictures)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import filterscope as fs
from filterscope.metrics import reference_crops, score
from filterscope.plots import image_grid, save_figure

UNITS = {"_blocks.8": [9, 91], "_blocks.11": [30, 77], "_blocks.15": [16, 257]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the figure to write (.png or .jpg)")
    parser.add_argument("--recipes", default="paper,filterscope", help="comma-separated recipe names")
    args = parser.parse_args()
    model = fs.load_model("efficientnet_lite0")
    crops = reference_crops(model)
    images, titles = [], []
    for name in args.recipes.split(","):
        recipe = fs.get_recipe(name)
        seconds, count = 0.0, 0
        for layer, filters in UNITS.items():
            start = time.perf_counter()
            result = fs.visualize_filters(model, layer, filters, recipe=recipe)
            seconds += time.perf_counter() - start
            count += len(filters)
            for i, objective in enumerate(result.objectives):
                quality = score(model, objective, result.images[i:i + 1], reference=crops)[0]
                images.append(result.pil(i))
                titles.append(f"{objective.title}\nrobustness {quality.robustness:.1f}")
        print(f"{name}: {seconds / count:.1f} s/filter ({result.extra['precision']})", flush=True)
        titles[-count] = f"{name}, {seconds / count:.1f} s/filter\n" + titles[-count]
    columns = sum(len(f) for f in UNITS.values())
    figure = image_grid(images, titles, columns=columns, panel_inches=2.2,
                        suptitle="efficientnet_lite0: the same filters, one row per recipe")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(save_figure(figure, args.out))


if __name__ == "__main__":
    main()
