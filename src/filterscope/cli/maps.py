"""``filterscope atlas map``: an activation atlas of a layer, from an atlas's exemplar pass."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..atlas import Atlas, build_atlas
from ..engine.recipes import list_recipes
from ..errors import InvalidOptionError
from ..maps.layout import GRID, LAYOUTS, MIN_COUNT, MIN_DIST, N_NEIGHBORS
from ..maps.samples import POSITIONS
from ..maps.settings import MapSettings
from ..runtime.core import Runtime
from .app import guarded
from .atlas import _Bars, atlas_app, check_icons
from .options import DeviceOption, PreprocessingOption, QuietOption, WeightsOption, check_list
from .serve import render_settings


def _class(text: Optional[str], names: tuple[str, ...] | None, option: str) -> Optional[int]:
    """A class given as its index or (a unique start of) its name."""
    if text is None:
        return None
    text = text.strip()
    count = len(names or ())
    if text.lstrip("-").isdigit():
        index = int(text)
        if count and not 0 <= index < count:
            raise InvalidOptionError(f"{option} {index} is out of range: the model has {count} classes (0-{count - 1})")
        return index
    if not names:
        raise InvalidOptionError(f"{option} {text!r}: the model has no class names; give the class's index")
    lowered = text.lower()
    exact = [i for i, n in enumerate(names) if lowered in (p.strip().lower() for p in n.split(","))]
    found = exact or [i for i, n in enumerate(names) if n.lower().startswith(lowered)]
    if len(found) != 1:
        what = "no class" if not found else f"{len(found)} classes ({', '.join(names[i] for i in found[:4])})"
        raise InvalidOptionError(f"{option} {text!r} names {what}: give a class index (0-{count - 1}) or a name")
    return found[0]


def _figure_path(figure: Optional[Path], out: Path, layer: str, *, several: bool) -> Path:
    """``--figure`` (with the layer's name added when there are several), else ``OUT/maps/LAYER-map.png``."""
    if figure is None:
        return out / "maps" / f"{layer}-map.png"
    return figure.with_name(f"{figure.stem}-{layer}.png") if several else figure


@atlas_app.command("map")
@guarded
def map_command(
    out: Annotated[Path, typer.Argument(help="The atlas folder (its exemplar pass gives the samples).",
                                        show_default=False)],
    layers: Annotated[str, typer.Option("--layers", "--layer", "-l", help="Layers, separated by commas.")],
    grid: Annotated[int, typer.Option("--grid", help="Cells a side.")] = GRID,
    positions: Annotated[str, typer.Option("--positions", help="Samples per image: one seeded random position "
                                           "away from the border (random: large datasets) or all (small "
                                           "ones).")] = "random",
    label_class: Annotated[Optional[str], typer.Option(
        "--class", help="A class atlas: only samples whose top attributed class is this one (index or name).")] = None,
    compare: Annotated[Optional[str], typer.Option(
        "--compare", help="Two classes A,B: x is the samples' attribution to A minus B, y a 1-D layout.")] = None,
    min_count: Annotated[int, typer.Option("--min-count", help="Cells with this many samples or fewer are "
                                           "dropped.")] = MIN_COUNT,
    layout: Annotated[str, typer.Option("--layout", help=f"The 2-D layout: {', '.join(LAYOUTS)}.")] = "umap",
    neighbors: Annotated[int, typer.Option("--neighbors", help="UMAP's n_neighbors.")] = N_NEIGHBORS,
    min_dist: Annotated[float, typer.Option("--min-dist", help="UMAP's min_dist.")] = MIN_DIST,
    recipe: Annotated[str, typer.Option("--recipe", help=f"The icons' recipe: {', '.join(list_recipes())}.")
                      ] = "filterscope",
    icon_size: Annotated[int, typer.Option("--icon-size", help="Icon side in pixels.")] = 96,
    figure: Annotated[Optional[Path], typer.Option(
        "--figure", "-o", help="Write the map as a PNG here (default: OUT/maps/LAYER-map.png).")] = None,
    density: Annotated[bool, typer.Option("--density", help="Size each icon by its cell's count.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the positions, the layout and the icons.")] = 0,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="The model, when the atlas's own cannot be loaded again (default: the atlas's, "
                              "checked against its weights' fingerprint).")] = None,
    weights: WeightsOption = None,
    preprocessing: PreprocessingOption = None,
    quiet: QuietOption = False,
    device: DeviceOption = "auto",
) -> None:
    """An activation atlas: each layer's activation vectors over the atlas's dataset, laid out with UMAP,
    binned into a grid, each cell rendered as the image that drives its mean activation, labelled with its top
    attributed class.

    The samples come from the exemplar pass (atlas build --map collects them there; otherwise one more pass
    over the images collects them). Resumable: a killed map renders only the icons it lacks.

    Example: filterscope atlas map out/atlas -l _blocks.15 --grid 20
    """
    check_list(layers, "--layers")
    names = [name.strip() for name in layers.split(",") if name.strip()]
    if not names:
        raise InvalidOptionError("--layers names no layer")
    if positions not in POSITIONS:
        raise InvalidOptionError(f"Unknown --positions {positions!r}: use {', '.join(POSITIONS)}")
    if compare is not None:
        check_list(compare, "--compare")
        if len(compare.split(",")) != 2:
            raise InvalidOptionError(f"--compare takes two classes A,B (got {compare!r})")
    if figure is not None and figure.suffix.lower() != ".png":
        raise InvalidOptionError(f"--figure {figure} must end in .png")
    loaded, _ = render_settings(out, model, weights, preprocessing, seed, device, None)
    names_of = loaded.categories
    pair = None
    if compare is not None:
        a, b = compare.split(",")
        pair = (_class(a, names_of, "--compare"), _class(b, names_of, "--compare"))
    settings = MapSettings(positions=positions, seed=seed, grid=grid, min_count=min_count, layout=layout,
                           n_neighbors=neighbors, min_dist=min_dist, label_class=_class(label_class, names_of, "--class"),
                           compare=pair, recipe=recipe, icon_size=icon_size)  # type: ignore[arg-type]
    bars = _Bars(quiet)
    try:
        summary = build_atlas(out, loaded, names, recipes=(), runtime=Runtime(), progress=bars, circuits=False,
                              trust=False, maps=settings)
    finally:
        bars.close()
    with Atlas(out, create=False) as atlas:
        for name in names:
            found = atlas.map(name, settings=settings)
            path = _figure_path(figure, out, name, several=len(names) > 1)
            path.parent.mkdir(parents=True, exist_ok=True)
            found.figure(density=density).save(path)
            labelled = [c for c in found.cells if c.label_name]
            cosines = [c.cosine for c in found.cells if c.cosine is not None]
            trust = f", trustworthiness {found.trustworthiness:.3f}" if found.trustworthiness is not None else ""
            cos = f", icon cosine median {sorted(cosines)[len(cosines) // 2]:.2f}" if cosines else ""
            typer.echo(f"{name}: {len(found.cells)} cells of {grid}x{grid} over {int((found.places[:, 0] >= 0).sum())} "
                       f"samples ({len(labelled)} labelled){trust}{cos} → {path}")
    typer.echo(f"{out}: {summary.maps} map(s) laid out, {summary.icons} icon(s) rendered in {summary.seconds:.0f} s")
    check_icons(summary)
