"""The demo job behind ``make demo``: the paper's figures on the embedded EfficientNet-Lite0.

* Figure 1: one deep filter optimized at a fixed 56 px, at a fixed 224 px, and with the paper's
  56 → 408 px upscaling, each with the same total number of Adam steps (276).
* Figures 2/3: grids of 6 filters from a middle and from a deep layer, at the full paper recipe.

The recipe is never reduced; the demo stays within minutes by rendering few filters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .images import save_result
from .objectives import Channel
from .plots import image_grid, save_figure
from .render import PAPER_RECIPE, Recipe, RenderResult, StepInfo, render
from .zoo.registry import LoadedModel

__all__ = ["DemoPlan", "DEMO_PLAN", "run_demo"]


@dataclass(frozen=True)
class DemoPlan:
    figure1_layer: str = "_blocks.15"
    figure1_filter: int = 164  # the paper's Figure 1 shows its 164th filter
    middle_layer: str = "_blocks.8"
    middle_filters: tuple[int, ...] = (2, 9, 16, 34, 91, 92)  # the paper's Figure 2 indices
    deep_layer: str = "_blocks.15"
    deep_filters: tuple[int, ...] = (16, 128, 164, 219, 257, 306)  # indices from the paper that fit 320 channels


DEMO_PLAN = DemoPlan()


def _figure1_recipes(recipe: Recipe) -> list[tuple[str, Recipe]]:
    total = recipe.total_steps
    return [
        (f"(a) fixed {recipe.size} px, {total} steps", recipe.replace(scales=1, steps=total)),
        (f"(b) fixed 224 px, {total} steps", recipe.replace(size=224, scales=1, steps=total)),
        (f"(c) {recipe.size}→{recipe.output_size} px, {recipe.scales} scales, {total} steps", recipe),
    ]


def run_demo(model: LoadedModel, out: Path, *, plan: DemoPlan = DEMO_PLAN, recipe: Recipe = PAPER_RECIPE,
             seed: int = 0, progress: Callable[[str, int], Callable[[StepInfo], None] | None] | None = None,
             ) -> list[Path]:
    """Render the demo figures into ``out``; returns the figure paths.

    Args:
        model: Usually ``load_model("efficientnet_lite0")``.
        out: Output folder (created). Single images go to ``out/filters/`` and ``out/figure1/{a,b,c}/``.
        plan: Which layers and filters.
        recipe: The multi-scale recipe (the paper's by default).
        seed: Seed of the starting noise.
        progress: ``progress(label, total_steps)`` returns a per-step callback (or ``None``).
    """
    out = Path(out)
    figures: list[Path] = []

    def run(label: str, objectives: list[Channel], run_recipe: Recipe, folder: Path) -> RenderResult:
        callback = progress(label, run_recipe.total_steps) if progress else None
        result = render(model, objectives, recipe=run_recipe, seed=seed, callback=callback)
        save_result(result, folder)
        return result

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
    return figures
