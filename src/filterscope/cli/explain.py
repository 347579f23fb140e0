"""The ``explain`` command: what one image is made of at a layer (semantic dictionary, neuron groups, spatial
attribution), and ``seeded`` (caricature, inversion, accentuation)."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from PIL import Image

from ..engine.objectives import Direction, Objective
from ..engine.recipes import get_recipe
from ..engine.render import render
from ..engine.results import save_result
from ..errors import InvalidOptionError
from ..explain import PARTS, accentuate, caricature, invert, neuron_groups, semantic_dictionary, spatial_attribution
from ..explain.activations import as_image
from ..files import atomic_write_text, check_output
from ..layers import layer_slug
from ..zoo.model import LoadedModel
from .app import app, guarded
from .options import (
    DeviceOption,
    FitOption,
    ModelOption,
    OutOption,
    PreprocessingOption,
    QuietOption,
    SeedOption,
    WeightsOption,
    at_least,
    load,
)
from .pictures import unit_images
from .progress import RenderProgress


def _rendered(loaded: LoadedModel, objectives: list[Objective], label: str, recipe: str, seed: int, quiet: bool,
              out: Path) -> list[Image.Image]:
    progress = RenderProgress(label, None, quiet)
    try:
        result = render(loaded, objectives, recipe=get_recipe(recipe), seed=seed, callback=progress)
    finally:
        progress.close()
    save_result(result, out)
    return result.to_pil()


@app.command("explain")
@guarded
def explain_command(
    image: Annotated[Path, typer.Argument(help="The image.", show_default=False)],
    layer: Annotated[str, typer.Option("--layer", "-l", help="The layer (any accepted form, with a spatial grid).")],
    k: Annotated[int, typer.Option("-k", "--top", help="Top units per position in the dictionary.")] = 4,
    positions: Annotated[int, typer.Option("--positions", help="Positions the dictionary figure shows (the "
                                                               "strongest).")] = 6,
    groups: Annotated[int, typer.Option("--groups", help="Neuron groups (NMF components).")] = 6,
    part: Annotated[str, typer.Option("--part", help="What NMF factors: positive (max(A, 0)) or split (the positive "
                                                     "and negative parts side by side).")] = "positive",
    target: Annotated[Optional[int], typer.Option("--class", help="The class to attribute (default: the top one).")] = None,
    atlas: Annotated[Optional[Path], typer.Option("--atlas", help="An atlas whose renders show the units.")] = None,
    renders: Annotated[bool, typer.Option("--renders/--no-renders", help="Show units and groups by optimized images "
                                                                        "(the atlas's, else rendered now).")] = True,
    recipe: Annotated[str, typer.Option("--recipe", help="Recipe for the images the atlas lacks.")] = "filterscope",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write every number as JSON.")] = None,
    model: ModelOption = "efficientnet_lite0",
    weights: WeightsOption = None,
    preprocessing: PreprocessingOption = None,
    fit: FitOption = "crop",
    out: OutOption = Path("out/explain"),
    seed: SeedOption = 0,
    quiet: QuietOption = False,
    device: DeviceOption = "auto",
) -> None:
    """What an image is made of at a layer ("The Building Blocks of Interpretability"): the units that fire most at
    each position (semantic dictionary), the activations factored into groups of units (NMF, with heat maps),
    and where the top class comes from (activation x gradient per position, and per group).

    Example: filterscope explain cat.jpg -l _blocks.10 --groups 6
    """
    from ..atlas.store import AtlasStore
    from ..plots import dictionary_figure, heatmap_overlays, image_grid, save_figure

    for value, option in ((k, "-k"), (positions, "--positions"), (groups, "--groups")):
        at_least(value, 1, option)
    if part not in PARTS:
        raise InvalidOptionError(f"Unknown --part {part!r}: use {' or '.join(PARTS)}")
    get_recipe(recipe)
    check_output(out, folder=True)
    if json_path is not None:
        check_output(json_path, folder=False)
    loaded = load(model, weights, seed, device, quiet, preprocessing)
    store = AtlasStore(atlas, create=False, readonly=True) if atlas is not None else None
    seen = as_image(loaded, image, fit)
    dictionary = semantic_dictionary(loaded, seen, layer, k=k)
    found = neuron_groups(loaded, seen, layer, n=groups, part=part, seed=seed)
    attribution = spatial_attribution(loaded, seen, layer, target=target)
    shares = attribution.of_groups(found)
    ref = str(dictionary.layer)
    typer.echo(f"{loaded.name} {ref} on {seen.name}: class {attribution.target} "
               f"({attribution.name or '-'}), logit {attribution.logit:.4g}; attribution at the layer "
               f"{attribution.total:.4g}")
    strongest = dictionary.strongest(positions)
    for number, (y, x) in enumerate(strongest, start=1):
        typer.echo(f"  {number}. position ({y}, {x}): " + ", ".join(f"unit {u} ({v:.3g})" for u, v in dictionary.at(y, x)))
    typer.echo(f"  {len(found)} neuron groups of the {'positive part' if part == 'positive' else 'positive and negative parts'}"
               f"{' (the layer is signed)' if found.signed else ''}: {found.explained:.1%} explained"
               f"{'' if found.converged else ' (NMF did not converge)'}; attribution of each: "
               + ", ".join(f"{g}: {float(v):.3g}" for g, v in enumerate(shares)))
    stem = f"{Path(seen.name).stem}-{layer_slug(ref)}"
    units = sorted({u for y, x in strongest for u, _ in dictionary.at(y, x)})
    pictures = unit_images(loaded, store, ref, units, recipe, seed, quiet, out / "units") if renders else {}
    rows = [((y, x), [(f"unit {u} ({v:.3g})", pictures.get(u)) for u, v in dictionary.at(y, x)]) for y, x in strongest]
    fig = dictionary_figure(seen.pil(), tuple(dictionary.units.shape[:2]), rows,  # type: ignore[arg-type]
                            suptitle=f"{loaded.name} {ref}: the top {k} units at the {len(rows)} strongest positions")
    typer.echo(f"wrote {save_figure(fig, out / f'{stem}-dictionary.png')}")
    titles = [f"group {g}: {float(v):.3g}" for g, v in enumerate(shares)]
    fig = heatmap_overlays(seen.pil(), found.spatial, titles, label="group weight", signed=False,
                           suptitle=f"{loaded.name} {ref}: {len(found)} neuron groups ({found.explained:.0%} explained; "
                                    f"titles: attribution to {attribution.name or attribution.target})")
    typer.echo(f"wrote {save_figure(fig, out / f'{stem}-groups.png')}")
    if renders:
        directions: list[Objective] = [Direction(dictionary.layer, tuple(float(v) for v in c)) for c in found.channels]
        images = _rendered(loaded, directions, f"rendering {len(found)} groups", recipe, seed, quiet, out / "groups")
        fig = image_grid(images, [f"group {g}" for g in range(len(images))],
                         suptitle=f"{loaded.name} {ref}: each group's direction, rendered ({recipe} recipe)")
        typer.echo(f"wrote {save_figure(fig, out / f'{stem}-group-renders.png')}")
    fig = heatmap_overlays(seen.pil(), attribution.map[None], [f"class {attribution.name or attribution.target}"],
                           label="activation x gradient",
                           suptitle=f"{loaded.name} {ref}: where {attribution.name or attribution.target} comes from")
    typer.echo(f"wrote {save_figure(fig, out / f'{stem}-attribution.png')}")
    if json_path is not None:
        data = {"dictionary": dictionary.to_dict(), "groups": {**found.to_dict(), "attribution": shares.tolist()},
                "attribution": attribution.to_dict()}
        typer.echo(f"wrote {atomic_write_text(json_path, json.dumps(data) + chr(10))}")


SEEDED_MODES = ("caricature", "invert", "accentuate")


@app.command("seeded")
@guarded
def seeded_command(
    mode: Annotated[str, typer.Argument(help="caricature (what the layer sees, exaggerated), invert (what it "
                                             "keeps) or accentuate (one unit raised, the image kept close).",
                                        show_default=False)],
    image: Annotated[Path, typer.Argument(help="The image.", show_default=False)],
    layer: Annotated[str, typer.Option("--layer", "-l", help="The layer (any accepted form).")],
    unit: Annotated[Optional[int], typer.Option("--unit", "-u", help="accentuate: the unit to raise.")] = None,
    keep: Annotated[Optional[str], typer.Option("--keep", help="accentuate: the earlier layer kept close.")] = None,
    weight: Annotated[float, typer.Option("--weight", help="accentuate: how strongly it is kept close.")] = 1.0,
    model: ModelOption = "efficientnet_lite0",
    weights: WeightsOption = None,
    preprocessing: PreprocessingOption = None,
    fit: FitOption = "crop",
    out: OutOption = Path("out/seeded"),
    seed: SeedOption = 0,
    quiet: QuietOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Renders seeded by an image: caricature, feature inversion, feature accentuation; PNGs with metadata.

    Example: filterscope seeded accentuate cat.jpg -l _blocks.15 -u 16 --keep _blocks.3
    """
    if mode not in SEEDED_MODES:
        raise InvalidOptionError(f"Unknown mode {mode!r}: use {', '.join(SEEDED_MODES)}")
    if mode == "accentuate" and (unit is None or keep is None):
        raise InvalidOptionError("accentuate needs --unit and --keep (the earlier layer kept close)")
    check_output(out, folder=True)
    loaded = load(model, weights, seed, device, quiet, preprocessing)
    seen = as_image(loaded, image, fit)
    progress = RenderProgress(f"{mode} of {seen.name} at {layer}", None, quiet)
    try:
        if mode == "accentuate":
            result = accentuate(loaded, seen, layer, unit, keep=keep, weight=weight, seed=seed,  # type: ignore[arg-type]
                                callback=progress)
        else:
            chosen = caricature if mode == "caricature" else invert
            result = chosen(loaded, seen, layer, seed=seed, callback=progress)
    finally:
        progress.close()
    for path in save_result(result, out):
        typer.echo(f"{path}  {result.objectives[0].description}: {float(result.initial_values[0]):.4g} → "
                   f"{float(result.values[0]):.4g}")
