"""The ``filterscope`` command line: thin wrappers over the library.

Errors caused by input (a :class:`~filterscope.errors.FilterscopeError`) print one line on stderr
and exit with status 1; ``filterscope --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

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
from .objectives import Channel, ClassLogit, Neuron, Objective
from .render import PAPER_RECIPE, Recipe, StepInfo, iter_render

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
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the starting noise (and of random weights).")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).")]


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


class _Progress:
    """A tqdm bar fed by render callbacks."""

    def __init__(self, label: str, total: int, quiet: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=label, unit="step", disable=quiet, leave=False, file=sys.stderr,
                        dynamic_ncols=True)

    def __call__(self, info: StepInfo) -> None:
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
    model: ModelOption = "efficientnet_lite0",
    weights: WeightsOption = None,
    out: OutOption = Path("out/visualize"),
    seed: SeedOption = 0,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", help="Images optimized together (default: all). Each finished batch is saved at once.")] = None,
    device: DeviceOption = "cpu",
    quiet: QuietOption = False,
    size: Annotated[Optional[int], typer.Option(help="Recipe: start size, px.", rich_help_panel="Recipe")] = None,
    scales: Annotated[Optional[int], typer.Option(help="Recipe: number of scales.", rich_help_panel="Recipe")] = None,
    upscale: Annotated[Optional[float], typer.Option(help="Recipe: factor between scales.", rich_help_panel="Recipe")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Recipe: Adam steps per early scale.", rich_help_panel="Recipe")] = None,
    late_steps_factor: Annotated[Optional[float], typer.Option(
        help="Recipe: later scales run int(steps*factor) steps.", rich_help_panel="Recipe")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Recipe: Adam learning rate.", rich_help_panel="Recipe")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="Recipe: Adam weight decay.", rich_help_panel="Recipe")] = None,
    blur: Annotated[Optional[int], typer.Option(
        help="Recipe: box blur after each upscaling, px (odd, 0 = none).", rich_help_panel="Recipe")] = None,
) -> None:
    """Render what filters (or classes) respond to most, with the paper's multi-scale recipe.

    Writes one PNG per filter (named model-layer-fNNNN.png, with model, weights, layer, filter, seed, recipe and final activation in its metadata) and a grid of all of them.

    Example: filterscope visualize -m resnet34 -l layer4.2.relu -f 16,266,306 -o out/r34
    """
    from .images import output_name, save_result
    from .plots import image_grid, save_figure

    recipe = PAPER_RECIPE.replace(size=size, scales=scales, upscale=upscale, steps=steps,
                                  late_steps_factor=late_steps_factor, lr=lr, weight_decay=weight_decay, blur=blur)
    if classes is None and (layer is None or filters is None):
        raise InvalidObjectiveError("Give --layer and --filters (or --classes); see filterscope visualize --help")
    if classes is not None and (layer is not None or filters is not None or neuron):
        raise InvalidObjectiveError("--classes maximizes output logits: do not combine it with --layer, "
                                    "--filters or --neuron")
    loaded = _load(model, weights, seed, device, quiet)
    objectives: list[Objective]
    if classes is not None:
        objectives = [ClassLogit(i) for i in _parse_indices(classes, "--classes")]
        title_layer = "output"
    else:
        ref = resolve_layer(loaded, layer)
        if str(ref) != layer:
            typer.echo(f"layer {layer} → {ref}")
        kind = Neuron if neuron else Channel
        objectives = [kind(ref, i) for i in _parse_indices(filters, "--filters")]
        title_layer = str(ref)
    objectives = [o.resolve(loaded) for o in objectives]  # every index checked before any work

    chunk = batch_size or len(objectives)
    total = recipe.total_steps * -(-len(objectives) // chunk)
    progress = _Progress(f"{loaded.name} {title_layer}", total, quiet)
    results = []
    started = time.perf_counter()
    try:
        for result in iter_render(loaded, objectives, recipe=recipe, seed=seed, batch_size=batch_size,
                                  callback=progress):
            for path, obj, before, after in zip(save_result(result, out), result.objectives,
                                                result.initial_values, result.values):
                progress.bar.write(f"{path}  {obj.description}: activation {float(before):.3g} → {float(after):.3g}")
            results.append(result)
    finally:
        progress.close()
    images = [r.pil(i) for r in results for i in range(len(r))]
    titles = [_panel_title(o) for r in results for o in r.objectives]
    grid_name = output_name(loaded.name, objectives[0]).rsplit("-", 1)[0] + "-grid.png"
    if classes is not None:
        grid_name = f"{loaded.name}-classes-grid.png"
    fig = image_grid(images, titles, suptitle=f"{loaded.name} {title_layer} ({loaded.weights.split(' (')[0]}), "
                                              f"seed {seed}")
    typer.echo(f"{save_figure(fig, out / grid_name)}  grid of {len(images)} "
               f"({time.perf_counter() - started:.0f} s)")


def _panel_title(objective: Objective) -> str:
    if isinstance(objective, ClassLogit):
        return f"class {objective.index}" + (f"\n{objective.label}" if objective.label else "")
    if isinstance(objective, (Channel, Neuron)):
        return f"filter {objective.channel}"
    return objective.description


@app.command("demo")
@_guarded
def demo_command(
    out: OutOption = Path("out/demo"),
    model: ModelOption = "efficientnet_lite0",
    seed: SeedOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Reproduce the paper's Figures 1-3 on the embedded model (a few minutes on 2 CPU cores)."""
    from .demo import run_demo

    loaded = _load(model, None, seed, "cpu", quiet)
    bars: list[_Progress] = []

    def progress(label: str, total: int):
        if bars:
            bars.pop().close()
        bars.append(_Progress(label, total, quiet))
        return bars[-1]

    started = time.perf_counter()
    try:
        figures = run_demo(loaded, out, seed=seed, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    for path in figures:
        typer.echo(f"wrote {path}")
    typer.echo(f"demo figures are in {out}/ (single images with metadata in {out}/filters/ and {out}/figure1/), "
               f"{time.perf_counter() - started:.0f} s")


def main() -> None:
    """Console-script entry point."""
    app()
