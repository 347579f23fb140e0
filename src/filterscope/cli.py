"""The ``filterscope`` command line: thin wrappers over the library.

Errors caused by input (a :class:`~filterscope.errors.FilterscopeError`) print one line on stderr
and exit with status 1; ``filterscope --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .errors import FilterscopeError, InvalidObjectiveError
from .layers import list_layers, resolve_layer
from .objectives import Channel, ClassLogit, Neuron, Objective, parse_objective
from .render import Recipe, StepInfo, iter_render

app = typer.Typer(
    name="filterscope",
    help="See what the filters of a convolutional network have learned (activation maximization).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"filterscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback when a command fails.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    _state["debug"] = debug
    from .runtime import configure_threads

    configure_threads()


def _guarded(command: Callable) -> Callable:
    """One line on stderr and exit 1 for a FilterscopeError; exit 130 on Ctrl-C."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except FilterscopeError as exc:
            if _state["debug"]:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            if _state["debug"]:
                raise
            typer.echo("interrupted (finished files are kept)", err=True)
            raise typer.Exit(130) from None

    return wrapper


# Options shared by several commands, defined once.
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model name (see `filterscope models`).")]
WeightsOption = Annotated[Optional[str], typer.Option(
    "--weights", "-w", help="'default' (the model's own), 'random' (untrained, seeded) or a state-dict FILE.")]
DeviceOption = Annotated[str, typer.Option(
    "--device", help="auto (cuda when available, else cpu), cpu, cuda or cuda:N.", rich_help_panel="Speed")]
BatchOption = Annotated[Optional[int], typer.Option(
    "--batch-size", help="Images per pass through the network (rendering default: as many as --max-memory holds, "
                         "up to what pays on the device; analyses: 4).", rich_help_panel="Speed")]
MemoryOption = Annotated[Optional[str], typer.Option(
    "--max-memory", help="Memory for the batch's working set, e.g. 2G or 512M (default: a quarter of the free "
                         "RAM, half the free GPU memory).", rich_help_panel="Speed")]
PrecisionOption = Annotated[str, typer.Option(
    "--precision", help="fp32 (exact) or bf16 (bfloat16 network, float32 loss: faster on AMX CPUs and GPUs, "
                        "slightly different images).", rich_help_panel="Speed")]
LayoutOption = Annotated[Optional[bool], typer.Option(
    "--channels-last/--nchw", help="Memory format of the convolutions (default: channels-last, faster on "
                                   "CPUs and GPUs).", show_default=False, rich_help_panel="Speed")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the starting noise (and of random weights).")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).")]


RecipeSize = Annotated[Optional[int], typer.Option("--size", help="Recipe: start size, px.", rich_help_panel="Recipe")]
RecipeScales = Annotated[Optional[int], typer.Option("--scales", help="Recipe: number of scales.",
                                                     rich_help_panel="Recipe")]
RecipeUpscale = Annotated[Optional[float], typer.Option("--upscale", help="Recipe: factor between scales.",
                                                        rich_help_panel="Recipe")]
RecipeSteps = Annotated[Optional[int], typer.Option("--steps", help="Recipe: Adam steps per early scale.",
                                                    rich_help_panel="Recipe")]
RecipeLateSteps = Annotated[Optional[float], typer.Option(
    "--late-steps-factor", help="Recipe: later scales run int(steps*factor) steps.", rich_help_panel="Recipe")]
RecipeLr = Annotated[Optional[float], typer.Option("--lr", help="Recipe: Adam learning rate.", rich_help_panel="Recipe")]
RecipeWeightDecay = Annotated[Optional[float], typer.Option("--weight-decay", help="Recipe: Adam weight decay.",
                                                            rich_help_panel="Recipe")]
RecipeBlur = Annotated[Optional[int], typer.Option(
    "--blur", help="Recipe: box blur after each upscaling, px (odd, 0 = none).", rich_help_panel="Recipe")]
FitOption = Annotated[str, typer.Option(
    "--fit", help="How the image meets the input: crop (the model's evaluation preprocessing), squash or pad.")]
KOption = Annotated[int, typer.Option("-k", "--top", help="How many top filters.")]


RecipeOption = Annotated[str, typer.Option(
    "--recipe", help="A named recipe (paper, lucid, filterscope; see `filterscope recipes`) or a .json/.toml file. "
                     "The options below change single numbers of it.", rich_help_panel="Recipe")]


def _recipe(name: str = "paper", **values: float | int | None) -> Recipe:
    from .recipes import get_recipe

    return get_recipe(name).replace(**values)


def _runtime(precision: str, channels_last: bool | None, max_memory: str | None):
    from .runtime import Runtime, parse_memory

    return Runtime(precision=precision, channels_last=channels_last,
                   max_memory=None if max_memory is None else parse_memory(max_memory))


def _load(model: str, weights: str | None, seed: int, device: str, quiet: bool):
    from .zoo import load_model

    return load_model(model, weights, seed=seed, device=device, progress=not quiet)


def _parse_indices(text: str, option: str) -> list[int]:
    """``"16,266,306"`` or ``"0-7,12"`` → a list of ints."""
    indices: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                low, high = (int(p) for p in part.split("-", 1))
                if high < low:
                    raise ValueError
                indices.extend(range(low, high + 1))
            elif part:
                indices.append(int(part))
        except ValueError:
            raise InvalidObjectiveError(f"Bad {option} value {text!r}: expected integers and ranges separated "
                                        "by commas, e.g. 16,266,306 or 0-7") from None
    if not indices:
        raise InvalidObjectiveError(f"{option} names no index")
    return indices


class _ImageProgress:
    """A tqdm bar fed by ``progress(done, total)`` callbacks of the analyses."""

    def __init__(self, label: str, total: int | None, quiet: bool, unit: str = "image") -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=label, unit=unit, disable=quiet, leave=False, file=sys.stderr,
                        dynamic_ncols=True)

    def __call__(self, done: int, total: int) -> None:
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> _ImageProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


class _Progress:
    """A tqdm bar fed by render callbacks."""

    def __init__(self, label: str, total: int | None, quiet: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=label, unit="step", disable=quiet, leave=False, file=sys.stderr,
                        dynamic_ncols=True)

    def __call__(self, info: StepInfo) -> None:
        if self.bar.total != info.total_steps * info.chunks:  # known once the batch size is
            self.bar.total = info.total_steps * info.chunks
        self.bar.update(1)
        self.bar.set_postfix_str(
            f"batch {info.chunk + 1}/{info.chunks} scale {info.scale + 1} ({info.size}px) "
            f"mean activation {float(info.values.mean()):.3g}", refresh=False)

    def close(self) -> None:
        self.bar.close()


@app.command("models")
@_guarded
def models_command(pattern: Annotated[str, typer.Argument(help="fnmatch pattern, e.g. '*resnet*'.")] = "*") -> None:
    """List the models filterscope knows by name, with where their weights come from."""
    from .zoo import get_model_spec, list_models
    from .zoo.weights import PackageWeights

    names = list_models(pattern)
    if not names:
        raise FilterscopeError(f"No model matches {pattern!r}; run `filterscope models` for all")
    for name in names:
        spec = get_model_spec(name)
        if isinstance(spec.weights, PackageWeights):
            try:
                spec.weights.locate()
                where = f"package {spec.weights.distribution} (installed)"
            except FilterscopeError:
                where = f"package {spec.weights.distribution} (not installed)"
        else:
            cached = spec.weights.cache_path().is_file()
            where = f"{spec.weights.file_name} ({'cached' if cached else 'downloaded on first use'})"
        typer.echo(f"{name:<20} {spec.preprocessing.input_size:>3} px  {where:<58} {spec.description}")


@app.command("recipes")
@_guarded
def recipes_command() -> None:
    """List the named recipes (use one with --recipe NAME, or write a .json/.toml file with its fields)."""
    from .recipes import RECIPES

    for name, recipe in RECIPES.items():
        t = recipe.transforms
        transforms = "none" if not t.active else (f"pad {t.pad}, jitter {t.jitter}, scale {min(t.scales, default=1):g}-"
                                                  f"{max(t.scales, default=1):g}, rotate ±{max(t.angles, default=0):g}°")
        color = " + decorrelated color" if recipe.decorrelate else ""
        typer.echo(f"{name:<12} {recipe.param}{color}; sizes {recipe.sizes()[0]}→{recipe.output_size} px in "
                   f"{recipe.scales} scale(s); {recipe.total_steps} Adam steps, lr {recipe.lr:g}; blur {recipe.blur}; "
                   f"transforms: {transforms}")


@app.command("layers")
@_guarded
def layers_command(
    model: Annotated[str, typer.Argument(help="Model name (see `filterscope models`).")],
    size: Annotated[Optional[int], typer.Option("--size", help="Input size for the shapes (default: the model's).")] = None,
    contains: Annotated[Optional[str], typer.Option("--grep", help="Only layers whose name contains this.")] = None,
) -> None:
    """Print every hookable layer of MODEL with its output shape (channels, height, width).

    Weights do not change shapes, so this never loads or downloads them.
    """
    loaded = _load(model, "random", 0, "cpu", True)
    size = size or loaded.preprocessing.input_size
    typer.echo(f"# {loaded.name}: layers and output shapes at {size}x{size} px input")
    typer.echo(f"{'layer':<40} {'type':<20} {'output shape':<18} calls")
    for info in list_layers(loaded, size):
        if contains and contains not in info.name:
            continue
        calls = "" if info.calls == 1 else f"{info.calls} (last captured; NAME:0 for the first)"
        typer.echo(f"{info.name or 'output':<40} {info.type:<20} {str(tuple(info.shape)):<18} {calls}")


@app.command("visualize")
@_guarded
def visualize_command(
    layer: Annotated[Optional[str], typer.Option(
        "--layer", "-l", help="Layer: module path (layer4.2.relu), child-index path (7.2.relu), NAME:K for "
                              "the K-th call.")] = None,
    filters: Annotated[Optional[str], typer.Option(
        "--filters", "--channels", "-f", help="Filter (channel) indices: 16,266,306 or 0-7.")] = None,
    classes: Annotated[Optional[str], typer.Option(
        "--classes", help="Maximize these class logits instead of filters, e.g. 281,285.")] = None,
    neuron: Annotated[bool, typer.Option(
        "--neuron", help="Maximize the central neuron of each filter instead of its mean.")] = False,
    objective: Annotated[Optional[list[str]], typer.Option(
        "--objective", "-O", help="An objective expression, e.g. \"channel(layer4.2.relu,484) - "
                                  "0.5*channel(layer4.2.relu,257)\"; functions: channel, neuron, class, layer, "
                                  "direction, diversity. Repeatable: one image each.")] = None,
    copies: Annotated[int, typer.Option(
        "--copies", help="Images per objective, each from its own noise (add diversity(LAYER) to push them "
                         "apart).")] = 1,
    model: ModelOption = "efficientnet_lite0",
    weights: WeightsOption = None,
    out: OutOption = Path("out/visualize"),
    seed: SeedOption = 0,
    quiet: QuietOption = False,
    device: DeviceOption = "auto",
    batch_size: BatchOption = None,
    max_memory: MemoryOption = None,
    precision: PrecisionOption = "fp32",
    channels_last: LayoutOption = None,
    recipe_name: RecipeOption = "paper",
    size: RecipeSize = None,
    scales: RecipeScales = None,
    upscale: RecipeUpscale = None,
    steps: RecipeSteps = None,
    late_steps_factor: RecipeLateSteps = None,
    lr: RecipeLr = None,
    weight_decay: RecipeWeightDecay = None,
    blur: RecipeBlur = None,
) -> None:
    """Render what filters (or classes) respond to most, with the paper's multi-scale recipe.

    Writes one PNG per filter (named model-layer-fNNNN.png, with model, weights, layer, filter, seed, recipe and final activation in its metadata) and a grid of all of them.

    Example: filterscope visualize -m resnet34 -l layer4.2.relu -f 16,266,306 -o out/r34
    """
    from .images import output_name, save_result
    from .plots import image_grid, save_figure

    recipe = _recipe(recipe_name, size=size, scales=scales, upscale=upscale, steps=steps,
                     late_steps_factor=late_steps_factor, lr=lr, weight_decay=weight_decay, blur=blur)
    modes = [name for name, given in (("--layer/--filters", layer is not None or filters is not None),
                                      ("--classes", classes is not None), ("--objective", bool(objective)))
             if given]
    if len(modes) != 1:
        raise InvalidObjectiveError(f"Give one of --layer with --filters, --classes or --objective (got "
                                    f"{', '.join(modes) or 'none'}); see filterscope visualize --help")
    if (layer is None) != (filters is None):
        raise InvalidObjectiveError("--layer and --filters go together; see filterscope visualize --help")
    if neuron and layer is None:
        raise InvalidObjectiveError("--neuron applies to --layer/--filters")
    parsed = [parse_objective(text) for text in objective or []]  # syntax errors before loading anything
    runtime = _runtime(precision, channels_last, max_memory)
    loaded = _load(model, weights, seed, device, quiet)
    objectives: list[Objective]
    if classes is not None:
        objectives = [ClassLogit(i) for i in _parse_indices(classes, "--classes")]
        title_layer = "output"
    elif parsed:
        objectives = parsed
        title_layer = "objectives"
    else:
        ref = resolve_layer(loaded, layer)
        if str(ref) != layer:
            typer.echo(f"layer {layer} → {ref}")
        kind = Neuron if neuron else Channel
        objectives = [kind(ref, i) for i in _parse_indices(filters, "--filters")]
        title_layer = str(ref)
    objectives = [o.resolve(loaded) for o in objectives]  # every index checked before any work

    batch_size = _batch_size(loaded, objectives, copies, recipe, runtime, batch_size, quiet)
    progress = _Progress(f"{loaded.name} {title_layer}", None, quiet)
    results = []
    started = time.perf_counter()
    try:
        for result in iter_render(loaded, objectives, recipe=recipe, seed=seed, batch_size=batch_size,
                                  copies=copies, runtime=runtime, callback=progress):
            for path, obj, before, after in zip(save_result(result, out), result.objectives,
                                                result.initial_values, result.values):
                progress.bar.write(f"{path}  {obj.description}: activation {float(before):.3g} → {float(after):.3g}")
            results.append(result)
    finally:
        progress.close()
    images = [r.pil(i) for r in results for i in range(len(r))]
    titles = [_panel_title(o) for r in results for o in r.objectives]
    grid_name = output_name(loaded.name, objectives[0]).rsplit("-", 1)[0] + "-grid.png"
    if classes is not None or parsed:
        grid_name = f"{loaded.name}-{'classes' if classes is not None else 'objectives'}-grid.png"
    fig = image_grid(images, titles, suptitle=f"{loaded.name} {title_layer} ({loaded.weights.split(' (')[0]}), "
                                              f"seed {seed}")
    typer.echo(f"{save_figure(fig, out / grid_name)}  grid of {len(images)} "
               f"({time.perf_counter() - started:.0f} s)")


def _batch_size(loaded, objectives: list[Objective], copies: int, recipe: Recipe, runtime, batch_size: int | None,
                quiet: bool) -> int:
    """The batch size to use, said in one line (how it was chosen) unless quiet."""
    from .render import plan_batches
    from .runtime import format_bytes

    count = len(objectives) * copies
    how = "given"
    if batch_size is None:
        batch_size = plan_batches(loaded, [o for o in objectives for _ in range(copies)], recipe, runtime)
        budget = runtime.memory_budget(loaded.device)
        how = f"automatic: {format_bytes(budget)} budget at {recipe.output_size} px"
    if not quiet:
        typer.echo(f"{count} image(s) on {loaded.device}, {runtime.describe()}, batches of "
                   f"{min(batch_size, count)} ({how})", err=True)
    return batch_size


def _panel_title(objective: Objective) -> str:
    if isinstance(objective, ClassLogit):
        return f"class {objective.index}" + (f"\n{objective.label}" if objective.label else "")
    if isinstance(objective, (Channel, Neuron)):
        return f"filter {objective.channel}"
    return objective.description


def _image_label(paths: list[Path]) -> str:
    return paths[0].stem if len(paths) == 1 else f"{paths[0].stem}+{len(paths) - 1}"


@app.command("top")
@_guarded
def top_command(
    images: Annotated[list[Path], typer.Argument(help="Image files, or folders of images.", show_default=False)],
    layer: Annotated[str, typer.Option("--layer", "-l", help="Layer to analyse (any accepted form).")],
    k: KOption = 10,
    model: ModelOption = "efficientnet_lite0",
    weights: WeightsOption = None,
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
    max_memory: MemoryOption = None,
    precision: PrecisionOption = "fp32",
    channels_last: LayoutOption = None,
    recipe_name: RecipeOption = "paper",
    size: RecipeSize = None,
    scales: RecipeScales = None,
    upscale: RecipeUpscale = None,
    steps: RecipeSteps = None,
    late_steps_factor: RecipeLateSteps = None,
    lr: RecipeLr = None,
    weight_decay: RecipeWeightDecay = None,
    blur: RecipeBlur = None,
) -> None:
    """Which filters of a layer an image activates most (mean activation), the top k, and a plot.

    With several images (or a folder) filters are ranked by the mean over all of them, and the stability of the top k across images is reported. Writes a Figure-5-style plot to --out.

    Example: filterscope top cat.jpg -l _blocks.15 -k 10 --visualize
    """
    from .analysis import collect_images, rank_filters
    from .images import atomic_write_text, layer_slug, save_result
    from .plots import activation_bars, save_figure, top_filters_panel
    from .render import visualize_filters

    recipe = _recipe(recipe_name, size=size, scales=scales, upscale=upscale, steps=steps,
                     late_steps_factor=late_steps_factor, lr=lr, weight_decay=weight_decay, blur=blur)
    from .analysis import ANALYSIS_BATCH

    runtime = _runtime(precision, channels_last, max_memory)
    paths = collect_images(images)
    loaded = _load(model, weights, seed, device, quiet)
    with _ImageProgress("ranking", len(paths), quiet or len(paths) < 8) as progress:
        ranking = rank_filters(loaded, paths, layer, k=k, augment=augment, seed=seed, fit=fit,
                               batch_size=batch_size or ANALYSIS_BATCH, runtime=runtime, progress=progress)
    label = _image_label(paths)
    views = f", {augment} augmented views each" if augment else ""
    typer.echo(f"{loaded.name} {ranking.layer}: top {k} of {ranking.means.numel()} filters by mean activation "
               f"over {len(paths)} image(s){views}")
    typer.echo(f"{'rank':>4}  {'filter':>6}  {'mean activation':>15}")
    for rank, (f, value) in enumerate(zip(ranking.top, ranking.top_values), start=1):
        typer.echo(f"{rank:>4}  {f:>6}  {value:>15.4f}")
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
        render_batch = _batch_size(loaded, objectives, 1, recipe, runtime, batch_size, quiet)
        progress = _Progress(f"visualizing top {k}", None, quiet)
        try:
            result = visualize_filters(loaded, ranking.layer, ranking.top, recipe=recipe, seed=seed,
                                       batch_size=render_batch, runtime=runtime, callback=progress)
        finally:
            progress.close()
        save_result(result, out / "filters")
        fig = top_filters_panel(ranking.images[0].pil(), ranking.images[0].name, result.to_pil(), ranking.top,
                                ranking.top_values,
                                suptitle=f"{loaded.name} {ranking.layer}: the {k} filters {label} activates most")
        typer.echo(f"wrote {save_figure(fig, out / f'{stem}-top{k}-visualized.png')}")


@app.command("occlude")
@_guarded
def occlude_command(
    image: Annotated[Path, typer.Argument(help="The image.", show_default=False)],
    layer: Annotated[str, typer.Option("--layer", "-l", help="Layer to analyse (any accepted form).")],
    region: Annotated[Optional[list[str]], typer.Option(
        "--region", "-r", help="NAME=x0,y0,x1,y1 in image pixels, or with % suffixes; boxes joined with + "
                               "form one variant. Repeatable.")] = None,
    regions: Annotated[Optional[Path], typer.Option(
        "--regions", help="JSON ({name: [[x0,y0,x1,y1], ...]}) or CSV (name,x0,y0,x1,y1) of variants.")] = None,
    k: KOption = 10,
    fill: Annotated[str, typer.Option("--fill", help="gray, black, mean, blur or noise.")] = "gray",
    model: ModelOption = "efficientnet_lite0",
    weights: WeightsOption = None,
    fit: FitOption = "crop",
    maps: Annotated[bool, typer.Option(
        "--maps/--no-maps", help="Occlusion sensitivity maps for the top filters of the original.")] = False,
    maps_k: Annotated[int, typer.Option("--maps-k", help="How many top filters get a sensitivity map.")] = 3,
    patch: Annotated[int, typer.Option("--patch", help="Sensitivity maps: patch side, input px.")] = 32,
    stride: Annotated[int, typer.Option("--stride", help="Sensitivity maps: patch stride, input px.")] = 8,
    out: OutOption = Path("out/occlude"),
    seed: SeedOption = 0,
    quiet: QuietOption = False,
    device: DeviceOption = "auto",
    batch_size: BatchOption = None,
    precision: PrecisionOption = "fp32",
    channels_last: LayoutOption = None,
) -> None:
    """How the top filters change when parts of the image are occluded (the paper's Table 1).

    Prints the table (top k per variant, filters in common with the original as 7/10, change of the original top k's mean activation, rank correlation) and writes it as Markdown and CSV, with a sheet of the occluded images, to --out. --maps adds occlusion sensitivity maps.

    Example: filterscope occlude cat.jpg -l _blocks.15 -r eyes=130,80,205,150+295,105,345,165 -r face=95,20,355,285 --maps
    """
    from .analysis import occlusion_study, parse_region, prepare_image, read_regions, sensitivity_maps
    from .errors import RegionError
    from .images import atomic_write_text, layer_slug
    from .plots import occlusion_sheet, save_figure, sensitivity_figure

    variants: dict = dict(read_regions(regions)) if regions is not None else {}
    for spec in region or []:
        name, boxes = parse_region(spec)
        variants.setdefault(name, []).extend(boxes)
    if not variants:
        raise RegionError("Give at least one --region NAME=x0,y0,x1,y1 or a --regions FILE")
    from .analysis import ANALYSIS_BATCH

    runtime = _runtime(precision, channels_last, None)
    loaded = _load(model, weights, seed, device, quiet)
    item = prepare_image(loaded, image, fit=fit)
    study = occlusion_study(loaded, item, layer, variants, k=k, fill=fill, seed=seed, runtime=runtime)
    sensitivity = None
    if maps:
        with _ImageProgress("sensitivity maps", None, quiet, unit="patch") as progress:
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


@app.command("evaluate")
@_guarded
def evaluate_command(
    images: Annotated[list[Path], typer.Argument(help="Visualization PNGs (or folders of them).", show_default=False)],
    objective: Annotated[Optional[str], typer.Option(
        "--objective", "-O", help="The unit the images show; default: read from each PNG's metadata.")] = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Default: read from each PNG's metadata, else efficientnet_lite0.")] = None,
    weights: WeightsOption = None,
    reference: Annotated[Optional[Path], typer.Option(
        "--reference", help="Folder of natural images to compare with (default: scikit-image's photos).")] = None,
    transfer_model: Annotated[str, typer.Option(
        "--transfer-model", help="For class objectives: the network whose top-1 class is reported.")] = "efficientnet_lite2",
    samples: Annotated[int, typer.Option("--samples", help="Random transforms for the robustness score.")] = 16,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the scores as JSON.")] = None,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
) -> None:
    """Score visualizations: activation ratio vs natural images, robustness to small transforms, high-frequency share, and (class objectives) transfer to another network."""
    import json

    from .analysis import collect_images
    from .images import atomic_write_text, load_image, read_png_metadata, to_tensor
    from .metrics import reference_crops, score

    files = collect_images(images)
    jobs = []
    for path in files:
        meta = read_png_metadata(path) if path.suffix.lower() == ".png" else {}
        text = objective or meta.get("objective")
        if not text:
            raise InvalidObjectiveError(f"{path} carries no objective in its metadata: pass --objective")
        name = model or meta.get("model") or "efficientnet_lite0"
        image_weights = weights or ("random" if meta.get("weights", "").startswith("random") else None)
        jobs.append((path, parse_objective(text), name, image_weights))
    models, transfer_loaded, rows = {}, None, []
    refs = [load_image(p) for p in collect_images([reference])] if reference is not None else None
    for path, obj, name, image_weights in jobs:
        key = (name, image_weights)
        if key not in models:
            loaded = _load(name, image_weights, seed, device, True)
            models[key] = (loaded, reference_crops(loaded, refs, seed=seed))
        loaded, crops = models[key]
        if isinstance(obj, ClassLogit) and transfer_loaded is None:
            transfer_loaded = _load(transfer_model, None, seed, device, True)
        quality = score(loaded, obj, to_tensor(load_image(path)), reference=crops, samples=samples, seed=seed,
                        transfer_model=transfer_loaded if isinstance(obj, ClassLogit) else None)[0]
        rows.append({"file": str(path), "model": name, **dataclasses.asdict(quality)})
    header = f"{'file':<40} {'objective':<36} {'act. ratio':>10} {'robustness':>10} {'HF share':>8}  transfer"
    typer.echo(header)
    for row in rows:
        transfer = f"{row['transfer_class']} {row['transfer_label']} ({row['transfer_probability']:.2f})" \
            if row["transfer_class"] is not None else ""
        typer.echo(f"{Path(row['file']).name[:40]:<40} {row['objective'][:36]:<36} {row['activation_ratio']:>10.3f} "
                   f"{row['robustness']:>10.3f} {row['high_frequency_share']:>8.3f}  {transfer}")
    if json_path is not None:
        typer.echo(f"wrote {atomic_write_text(json_path, json.dumps(rows, indent=2))}")


@app.command("demo")
@_guarded
def demo_command(
    out: OutOption = Path("out/demo"),
    model: ModelOption = "efficientnet_lite0",
    seed: SeedOption = 0,
    quiet: QuietOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Reproduce the paper's figures (1-6, Table 1) on the embedded model and a cat photo (~3 min on 2 cores)."""
    from .demo import run_demo

    loaded = _load(model, None, seed, device, quiet)
    bars: list[_Progress] = []

    def progress(label: str, total: int):
        if bars:
            bars.pop().close()
        bars.append(_Progress(label, total, quiet))
        return bars[-1]

    started = time.perf_counter()
    try:
        outputs = run_demo(loaded, out, seed=seed, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    typer.echo("Table 1 on chelsea (occluded regions vs the top 10 filters):")
    typer.echo(outputs.table, nl=False)
    for path in outputs.figures:
        typer.echo(f"wrote {path}")
    typer.echo(f"demo figures are in {out}/ (single images with metadata in {out}/filters/ and {out}/figure1/), "
               f"{time.perf_counter() - started:.0f} s")


def main() -> None:
    """Console-script entry point."""
    app()
