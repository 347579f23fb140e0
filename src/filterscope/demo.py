"""The demo job behind ``make demo``: the paper's figures on the embedded EfficientNet-Lite0.

* Figure 1: one deep filter optimized at a fixed 56 px, at a fixed 224 px, and with the paper's
  56 → 408 px upscaling, each with the same total number of Adam steps (276).
* Figures 2/3: grids of 6 filters from a middle and from a deep layer, at the full paper recipe.
* Figures 4/5, Table 1, Figure 6 on scikit-image's cat photo (``chelsea``): the 10 filters of a deep
  layer it activates most, the top 5 visualized, an occlusion study over 8 regions (one covers the whole
  face), and occlusion sensitivity maps for the top 3.

* An atlas (``out/atlas``): 16 units of two layers, each rendered with the paper's recipe, with their
  exemplars from a reference set of a few hundred crops of scikit-image's colour photos
  (``out/reference-set``), and a sheet figure per layer (unit image next to its top exemplars); and an
  activation atlas of the deeper layer over the same images (``atlas_map_blocks_10.png``).

The first figure written is Figure 5 (one forward pass, seconds after the start). The paper's figures keep the
paper's recipe; the atlas, where the recipe is not the point, renders with the ``filterscope`` recipe (better
scores in less time). No recipe is reduced; the demo stays within minutes by rendering few filters.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .analysis import Box, Ranking, occlusion_study, rank_filters, sensitivity_maps
from .atlas import Atlas, BuildProgress
from .data import natural_images
from .engine.objectives import Channel
from .engine.recipes import PAPER_RECIPE, Recipe, get_recipe
from .engine.render import render
from .engine.results import RenderResult, StepInfo, save_result
from .files import atomic_write, atomic_write_text
from .images import save_png
from .maps import MapSettings
from .plots import (
    activation_bars,
    atlas_sheet,
    image_grid,
    occlusion_sheet,
    save_figure,
    sensitivity_figure,
    top_filters_panel,
)
from .runtime.core import Runtime
from .zoo.model import LoadedModel

__all__ = ["DemoPlan", "DEMO_PLAN", "DemoOutputs", "run_demo", "write_reference_set"]


@dataclass(frozen=True)
class DemoPlan:
    figure1_layer: str = "_blocks.15"
    figure1_filter: int = 164  # the paper's Figure 1 shows its 164th filter
    middle_layer: str = "_blocks.8"
    middle_filters: tuple[int, ...] = (2, 9, 16, 34, 91, 92)  # the paper's Figure 2 indices
    deep_layer: str = "_blocks.15"
    deep_filters: tuple[int, ...] = (16, 128, 164, 219, 257, 306)  # indices from the paper that fit 320 channels
    analysis_layer: str = "_blocks.15"
    top_k: int = 10
    visualize_k: int = 5
    maps_k: int = 3
    patch: int = 32
    stride: int = 8
    # Boxes in chelsea's pixels (451 x 300); the model's center crop sees about x 94-357, y 19-281.
    regions: tuple[tuple[str, tuple[tuple[int, int, int, int], ...]], ...] = (
        ("left eye", ((130, 80, 205, 150),)),
        ("right eye", ((295, 105, 345, 165),)),
        ("both eyes", ((130, 80, 205, 150), (295, 105, 345, 165))),
        ("nose", ((225, 215, 295, 265),)),
        ("forehead", ((160, 20, 290, 80),)),
        ("left cheek", ((100, 170, 200, 280),)),
        ("mouth", ((215, 250, 305, 300),)),
        ("whole face", ((95, 20, 355, 285),)),
    )
    atlas_layers: tuple[str, ...] = ("_blocks.4", "_blocks.10")
    atlas_units: int = 16
    atlas_recipe: str | Recipe = "filterscope"  # a recipe's name, or a recipe
    reference_images: int = 240
    map_layer: str = "_blocks.10"
    map_grid: int = 8


DEMO_PLAN = DemoPlan()


def _figure1_recipes(recipe: Recipe) -> list[tuple[str, Recipe]]:
    total = recipe.total_steps
    return [
        (f"(a) fixed {recipe.size} px, {total} steps", recipe.replace(scales=1, steps=total)),
        (f"(b) fixed 224 px, {total} steps", recipe.replace(size=224, scales=1, steps=total)),
        (f"(c) {recipe.size}→{recipe.output_size} px, {recipe.scales} scales, {total} steps", recipe),
    ]


@dataclass
class DemoOutputs:
    figures: list[Path]
    table: str  # the occlusion table (Table 1), as text


def run_demo(model: LoadedModel, out: Path, *, plan: DemoPlan = DEMO_PLAN, recipe: Recipe = PAPER_RECIPE,
             seed: int = 0, progress: Callable[[str, int], Callable[[StepInfo], None] | None] | None = None,
             runtime: Runtime | None = None) -> DemoOutputs:
    """Render the demo figures into ``out``; returns their paths and the occlusion table.

    The first figure (the filters the cat photo drives, one forward pass) is written within seconds; the
    paper's figures follow with the paper's recipe; the atlas, where the recipe is not the point, renders
    with ``plan.atlas_recipe`` (``filterscope``: the better picture in half the time).

    Args:
        model: Usually ``load_model("efficientnet_lite0")``.
        out: Output folder (created). Single images go to ``out/filters/`` and ``out/figure1/{a,b,c}/``.
        plan: Which layers and filters.
        recipe: The multi-scale recipe of the paper's figures (the paper's by default).
        seed: Seed of the starting noise.
        progress: ``progress(label, total_steps)`` returns a per-step callback (or ``None``).
        runtime: Precision, memory format, folding (:class:`~filterscope.runtime.Runtime`; default ``auto``).
    """
    out = Path(out)
    figures: list[Path] = []

    def run(label: str, objectives: list[Channel], run_recipe: Recipe, folder: Path) -> RenderResult:
        callback = progress(label, run_recipe.total_steps) if progress else None
        result = render(model, objectives, recipe=run_recipe, seed=seed, callback=callback, runtime=runtime)
        save_result(result, folder)
        return result

    ranking = _cat_ranking(model, out, plan, figures)

    target = Channel(plan.figure1_layer, plan.figure1_filter)
    panels, titles = [], []
    for title, run_recipe in _figure1_recipes(recipe):
        result = run(f"Figure 1 {title}", [target], run_recipe, out / "figure1" / title[1])
        panels.append(result.pil(0))
        titles.append(f"{title}\nactivation {float(result.values[0]):.1f}")
    fig = image_grid(panels, titles, columns=3, panel_inches=3.4,
                     suptitle=f"{model.name} {plan.figure1_layer} filter {plan.figure1_filter}: "
                              "fixed size vs. the paper's upscaling")
    figures.append(save_figure(fig, out / "figure1_scales.png"))

    for label, layer, filters in (("middle", plan.middle_layer, plan.middle_filters),
                                  ("deep", plan.deep_layer, plan.deep_filters)):
        result = run(f"{label} layer {layer}", [Channel(layer, f) for f in filters], recipe, out / "filters")
        fig = image_grid(result.to_pil(), [f"filter {f}" for f in filters], columns=3,
                         suptitle=f"{model.name} {layer} ({label} layer), paper recipe, seed {seed}")
        figures.append(save_figure(fig, out / f"grid_{label}_{layer.strip('_').replace('.', '_')}.png"))

    table = _cat_analysis(model, ranking, out, plan, recipe, figures, run)
    atlas_recipe = get_recipe(plan.atlas_recipe) if isinstance(plan.atlas_recipe, str) else plan.atlas_recipe
    figures.extend(_atlas(model, out, plan, atlas_recipe, seed, progress, runtime))
    return DemoOutputs(figures, table)


def write_reference_set(folder: str | Path, count: int, seed: int = 0, side: int = 224) -> Path:
    """``count`` random square crops (10-100 % of the shorter side) of scikit-image's colour photos, resized
    to ``side`` px, as JPEGs in ``folder``: a small offline dataset for exemplars. Returns the folder."""
    folder = Path(folder)
    photos = [image for image in natural_images()  # the colour ones: channels differ somewhere
              if float(np.asarray(image, dtype=np.float32).std(axis=2).mean()) > 2]
    generator = torch.Generator().manual_seed(seed)
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        crop = int(min(w, h) * (0.1 + 0.9 * float(torch.rand((), generator=generator))))
        x = int(torch.randint(0, w - crop + 1, (), generator=generator))
        y = int(torch.randint(0, h - crop + 1, (), generator=generator))
        image = photo.crop((x, y, x + crop, y + crop)).resize((side, side), Image.Resampling.LANCZOS)

        def write(tmp: Path, image: Image.Image = image) -> None:
            image.save(tmp, format="JPEG", quality=90)

        atomic_write(folder / f"crop{i:04d}.jpg", write)
    return folder


class _AtlasProgress(BuildProgress):
    def __init__(self, progress: Callable[[str, int], Callable[[StepInfo], None] | None] | None, total: int) -> None:
        self.progress, self.total = progress, total
        self.callback: Callable[[StepInfo], None] | None = None

    def stage(self, name: str, done: int, total: int, note: str = "") -> None:
        if name == "renders" and self.callback is None and self.progress is not None:
            self.callback = self.progress(f"atlas renders ({total} units)", self.total)

    def step(self, info: StepInfo) -> None:
        if self.callback is not None:
            self.callback(info)


def _atlas(model: LoadedModel, out: Path, plan: DemoPlan, recipe: Recipe, seed: int,
           progress: Callable[[str, int], Callable[[StepInfo], None] | None] | None,
           runtime: Runtime | None) -> list[Path]:
    dataset = out / "reference-set"
    if len(list(dataset.glob("*.jpg"))) != plan.reference_images:
        write_reference_set(dataset, plan.reference_images, seed)
    units = list(range(plan.atlas_units))
    figures = []
    with Atlas(out / "atlas") as atlas:
        atlas.build(model, list(plan.atlas_layers), units=units, recipes=[recipe], seeds=[seed], dataset=dataset,
                    exemplars=9, runtime=runtime, progress=_AtlasProgress(progress, recipe.total_steps))
        for layer in plan.atlas_layers:
            entries = []
            for unit in units:
                record = atlas.unit(layer, unit)
                done = [r for r in record.renders if r.file]
                files = [r.file for r in done if r.file]
                image = Image.open(atlas.path / files[0]).convert("RGB") if files else None
                crops = [Image.open(io.BytesIO(atlas.store.exemplar_image(e.id))).convert("RGB")
                         for e in record.exemplars.get("max", [])[:4]]
                ratio = f", robustness {done[0].robustness:.2f}" if done and done[0].robustness is not None else ""
                entries.append((f"unit {unit}{ratio}", image, crops))
            fig = atlas_sheet(entries, suptitle=f"{model.name} {layer}: optimized image and top dataset exemplars "
                                                f"(crops around the maximum, sized to the receptive field)")
            figures.append(save_figure(fig, out / f"atlas_{layer.strip('_').replace('.', '_')}.png"))
        settings = MapSettings(grid=plan.map_grid, min_count=2, seed=seed)
        atlas.build(model, plan.map_layer, recipes=(), circuits=False, trust=False, maps=settings,
                    progress=_AtlasProgress(progress, recipe.total_steps))
        path = out / f"atlas_map_{plan.map_layer.strip('_').replace('.', '_')}.png"
        picture = atlas.map(plan.map_layer, settings=settings).figure(cell=max(64, 512 // plan.map_grid))
        atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
        figures.append(path)
    return figures


def _cat_ranking(model: LoadedModel, out: Path, plan: DemoPlan, figures: list[Path]) -> Ranking:
    """Figure 5: the filters of the analysis layer that the cat photo drives most (one forward pass)."""
    from skimage import data

    cat = Image.fromarray(data.chelsea())
    save_png(cat, out / "chelsea.png")
    k = plan.top_k
    ranking = rank_filters(model, [cat], plan.analysis_layer, k=k, names=["chelsea"])
    c = ranking.concentration
    fig = activation_bars(ranking.means, ranking.top,
                          title=f"{model.name} {ranking.layer}: mean activation per filter for chelsea "
                                f"(top-{k} share {100 * c.top_k_share:.0f}%, {c.scenario})")
    figures.append(save_figure(fig, out / "figure5_top10.png"))
    atomic_write_text(out / "top10.csv", ranking.to_csv())
    return ranking


def _cat_analysis(model: LoadedModel, ranking: Ranking, out: Path, plan: DemoPlan, recipe: Recipe,
                  figures: list[Path], run: Callable[[str, list[Channel], Recipe, Path], RenderResult]) -> str:
    """Figure 4 (the top filters visualized), Table 1 and Figure 6 (occlusion), the sensitivity maps."""
    k = plan.top_k
    top = ranking.top[:plan.visualize_k]
    result = run(f"top {len(top)} filters for chelsea", [Channel(ranking.layer, f) for f in top], recipe,
                 out / "filters")
    fig = top_filters_panel(ranking.images[0].pil(), "chelsea (model's view)", result.to_pil(), top,
                            ranking.top_values[:len(top)],
                            suptitle=f"{model.name} {ranking.layer}: the {len(top)} filters the cat activates most")
    figures.append(save_figure(fig, out / "figure4_top5.png"))

    variants = {name: [Box(*box) for box in boxes] for name, boxes in plan.regions}
    study = occlusion_study(model, ranking.images[0], ranking.layer, variants, k=k)
    atomic_write_text(out / "table1_occlusion.md", study.markdown())
    atomic_write_text(out / "table1_occlusion.csv", study.to_csv())
    fig = occlusion_sheet(study.images, [r.name for r in study.rows],
                          suptitle="chelsea: occluded variants (gray fill), as the model sees them")
    figures.append(save_figure(fig, out / "figure6_occlusions.png"))

    maps = sensitivity_maps(model, ranking.images[0], ranking.layer, ranking.top[:plan.maps_k], patch=plan.patch,
                            stride=plan.stride)
    figures.append(save_figure(sensitivity_figure(maps, model_name=f"{model.name} {ranking.layer}"),
                               out / "sensitivity_top3.png"))
    return study.text()
