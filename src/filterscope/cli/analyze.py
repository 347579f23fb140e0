"""The image-driven analysis commands: ``top`` (which filters images drive) and ``occlude`` (Table 1,
sensitivity maps)."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..analysis import (
    ANALYSIS_BATCH,
    collect_images,
    occlusion_study,
    parse_region,
    prepare_image,
    rank_filters,
    read_regions,
    sensitivity_maps,
)
from ..engine.objectives import Channel
from ..engine.recipes import Recipe
from ..engine.render import visualize_filters
from ..engine.results import save_result
from ..errors import RegionError
from ..files import atomic_write_text, check_output
from ..layers import layer_slug
from ..runtime.core import Runtime
from .app import app, guarded
from .options import (
    BatchOption,
    DeviceOption,
    FitOption,
    KOption,
    ModelOption,
    OutOption,
    PreprocessingOption,
    QuietOption,
    SeedOption,
    WeightsOption,
    analysis_runtime_options,
    at_least,
    load,
    recipe_options,
    runtime_options,
)
from .progress import ImageProgress, RenderProgress
from .visualize import announce_batch_size


def _image_label(paths: list[Path]) -> str:
    return paths[0].stem if len(paths) == 1 else f"{paths[0].stem}+{len(paths) - 1}"


@app.command("top")
@guarded
@recipe_options
@runtime_options
def top_command(
    images: Annotated[list[Path], typer.Argument(help="Image files, or folders of images.", show_default=False)],
    layer: Annotated[str, typer.Option("--layer", "-l", help="Layer to analyse (any accepted form).")],
    k: KOption = 10,
    model: ModelOption = "efficientnet_lite0",
    weights: WeightsOption = None,
    preprocessing: PreprocessingOption = None,
    augment: Annotated[int, typer.Option(
        "--augment", help="Random augmented views per image (crops, flips, brightness), averaged in.")] = 0,
    fit: FitOption = "crop",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the full per-filter table as JSON.")] = None,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Write the full per-filter table as CSV.")] = None,
    visualize: Annotated[bool, typer.Option(
        "--visualize", help="Also render the top k filters with the recipe, and a Figure-4 panel.")] = False,
    out: OutOption = Path("out/top"),
    seed: SeedOption = 0,
    quiet: QuietOption = False,
    device: DeviceOption = "auto",
    batch_size: BatchOption = None,
    *,
    recipe: Recipe,
    runtime: Runtime,
) -> None:
    """Which filters of a layer an image activates most (mean activation), the top k, and a plot.

    With several images (or a folder) filters are ranked by the mean over all of them, and the stability of the top k across images is reported. Writes a Figure-5-style plot to --out.

    Example: filterscope top cat.jpg -l _blocks.15 -k 10 --visualize
    """
    from ..plots import activation_bars, save_figure, top_filters_panel

    at_least(augment, 0, "--augment")
    at_least(batch_size, 1, "--batch-size")
    check_output(out, folder=True)
    for path in (json_path, csv_path):
        if path is not None:
            check_output(path, folder=False)
    paths = collect_images(images)
    loaded = load(model, weights, seed, device, quiet, preprocessing)
    with ImageProgress("ranking", len(paths), quiet or len(paths) < 8) as progress:
        ranking = rank_filters(loaded, paths, layer, k=k, augment=augment, seed=seed, fit=fit,
                               batch_size=batch_size or ANALYSIS_BATCH, runtime=runtime, progress=progress)
    label = _image_label(paths)
    views = f", {augment} augmented views each" if augment else ""
    typer.echo(f"{loaded.name} {ranking.layer}: top {k} of {ranking.means.numel()} filters by mean activation "
               f"over {len(paths)} image(s){views}")
    typer.echo(f"{'rank':>4}  {'filter':>6}  {'mean activation':>15}")
    for rank, (f, value) in enumerate(zip(ranking.top, ranking.top_values), start=1):
        typer.echo(f"{rank:>4}  {f:>6}  {value:>15.4f}")
    if ranking.nonfinite:
        typer.echo(f"warning: {len(ranking.nonfinite)} filter(s) gave NaN or infinite activations and are ranked "
                   f"last: {', '.join(map(str, ranking.nonfinite[:10]))}", err=True)
    c = ranking.concentration
    typer.echo(f"concentration: top-{k} share {100 * c.top_k_share:.1f}% (no preference: {100 * c.uniform_share:.1f}%), "
               f"top/median {c.top_to_median:.2f}, effective filters {c.effective_filters:.1f} "
               f"→ {c.scenario}")
    if len(paths) > 1:
        counts = ", ".join(f"{f}: {n}/{len(paths)}" for f, n in ranking.frequency().items())
        typer.echo(f"stability: {100 * ranking.stability:.0f}% of each image's top {k} is in the overall top {k}; "
                   f"images with each filter in their top {k}: {counts}")
    stem = f"{label}-{layer_slug(ranking.layer)}"
    for path, text in ((json_path, ranking.to_json()), (csv_path, ranking.to_csv())):
        if path is not None:
            typer.echo(f"wrote {atomic_write_text(path, text)}")
    fig = activation_bars(ranking.means, ranking.top,
                          title=f"{loaded.name} {ranking.layer}: mean activation per filter, {label}{views}")
    typer.echo(f"wrote {save_figure(fig, out / f'{stem}-top{k}.png')}")
    if visualize:
        objectives = [Channel(ranking.layer, f).resolve(loaded) for f in ranking.top]
        render_batch = announce_batch_size(loaded, objectives, 1, recipe, runtime, batch_size, quiet)
        render_progress = RenderProgress(f"visualizing top {k}", None, quiet)
        try:
            result = visualize_filters(loaded, ranking.layer, ranking.top, recipe=recipe, seed=seed,
                                       batch_size=render_batch, runtime=runtime, callback=render_progress)
        finally:
            render_progress.close()
        save_result(result, out / "filters")
        fig = top_filters_panel(ranking.images[0].pil(), ranking.images[0].name, result.to_pil(), ranking.top,
                                ranking.top_values,
                                suptitle=f"{loaded.name} {ranking.layer}: the {k} filters {label} activates most")
        typer.echo(f"wrote {save_figure(fig, out / f'{stem}-top{k}-visualized.png')}")


@app.command("occlude")
@guarded
@analysis_runtime_options
def occlude_command(
    image: Annotated[Path, typer.Argument(help="The image.", show_default=False)],
    layer: Annotated[str, typer.Option("--layer", "-l", help="Layer to analyse (any accepted form).")],
    region: Annotated[Optional[list[str]], typer.Option(
        "--region", "-r", help="NAME=x0,y0,x1,y1 in image pixels, or with % suffixes; boxes joined with + "
                               "form one variant. Repeatable.")] = None,
    regions: Annotated[Optional[Path], typer.Option(
        "--regions", help="JSON ({name: [[x0,y0,x1,y1], ...]}) or CSV (name,x0,y0,x1,y1) of variants.")] = None,
    k: KOption = 10,
    fill: Annotated[str, typer.Option(
        "--fill", help="neutral (the model's normalization mean: what it reads as 0), gray (0.5), black, mean "
                       "(the image's mean color), blur or noise.")] = "neutral",
    model: ModelOption = "efficientnet_lite0",
    weights: WeightsOption = None,
    preprocessing: PreprocessingOption = None,
    fit: FitOption = "crop",
    maps: Annotated[bool, typer.Option(
        "--maps/--no-maps", help="Occlusion sensitivity maps for the top filters of the original.")] = False,
    maps_k: Annotated[int, typer.Option("--maps-k", help="How many top filters get a sensitivity map.")] = 3,
    patch: Annotated[Optional[int], typer.Option(
        "--patch", help="Sensitivity maps: patch side, input px (default: 1/7 of the input's shorter side, 32 at "
                        "224 px).")] = None,
    stride: Annotated[Optional[int], typer.Option(
        "--stride", help="Sensitivity maps: patch stride, input px (default: a quarter of the patch).")] = None,
    out: OutOption = Path("out/occlude"),
    seed: SeedOption = 0,
    quiet: QuietOption = False,
    device: DeviceOption = "auto",
    batch_size: BatchOption = None,
    *,
    runtime: Runtime,
) -> None:
    """How the top filters change when parts of the image are occluded (the paper's Table 1).

    Prints the table (top k per variant, filters in common with the original as 7/10, change of the original top k's mean activation, rank correlation) and writes it as Markdown and CSV, with a sheet of the occluded images, to --out. --maps adds occlusion sensitivity maps.

    Example: filterscope occlude cat.jpg -l _blocks.15 -r eyes=130,80,205,150+295,105,345,165 -r face=95,20,355,285 --maps
    """
    from ..plots import occlusion_sheet, save_figure, sensitivity_figure

    at_least(batch_size, 1, "--batch-size")
    at_least(maps_k, 1, "--maps-k")
    at_least(patch, 1, "--patch")
    at_least(stride, 1, "--stride")
    check_output(out, folder=True)
    variants: dict = dict(read_regions(regions)) if regions is not None else {}
    for spec in region or []:
        name, boxes = parse_region(spec)
        variants.setdefault(name, []).extend(boxes)
    if not variants:
        raise RegionError("Give at least one --region NAME=x0,y0,x1,y1 or a --regions FILE")
    loaded = load(model, weights, seed, device, quiet, preprocessing)
    item = prepare_image(loaded, image, fit=fit)
    study = occlusion_study(loaded, item, layer, variants, k=k, fill=fill, seed=seed, runtime=runtime)
    sensitivity = None
    if maps:
        with ImageProgress("sensitivity maps", None, quiet, unit="patch") as progress:
            sensitivity = sensitivity_maps(loaded, item, study.layer, study.rows[0].top[:maps_k], patch=patch,
                                           stride=stride, fill=fill, seed=seed, batch_size=batch_size or ANALYSIS_BATCH,
                                           runtime=runtime, progress=progress)
    typer.echo(f"{loaded.name} {study.layer}, {item.name}, fill {fill}:")
    typer.echo(study.text(), nl=False)
    for row in study.rows[1:]:
        if row.occluded_share == 0:
            typer.echo(f"note: region {row.name!r} lies outside the part of the image the model sees "
                       f"(--fit {fit}); try --fit squash or pad")
    stem = f"{Path(image).stem}-{layer_slug(study.layer)}"
    for suffix, text in (("md", study.markdown()), ("csv", study.to_csv())):
        path = atomic_write_text(out / f"{stem}-occlusion.{suffix}", text)
        typer.echo(f"wrote {path}")
    sheet = occlusion_sheet(study.images, [r.name for r in study.rows],
                            suptitle=f"{item.name}: occluded variants ({fill})")
    typer.echo(f"wrote {save_figure(sheet, out / f'{stem}-occlusion-sheet.png')}")
    if sensitivity is not None:
        fig = sensitivity_figure(sensitivity, model_name=f"{loaded.name} {study.layer}")
        typer.echo(f"wrote {save_figure(fig, out / f'{stem}-sensitivity.png')}")
