"""The ``visualize`` command: render filters, classes or objective expressions; and the one line that
says how images are batched (shared with ``top --visualize``)."""

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Optional

import typer
from PIL import Image

from ..engine.identity import RenderIdentity, RenderSettings
from ..engine.objective_syntax import parse_objective
from ..engine.objectives import Channel, ClassLogit, Neuron, Objective
from ..engine.recipes import Recipe
from ..engine.render import choose_runtime, iter_render, plan_batches
from ..engine.results import finished_outputs, output_name, save_result
from ..errors import FilterscopeError, InvalidObjectiveError, InvalidOptionError
from ..files import OutputLock, check_output, remove_stale_parts
from ..images import read_png_metadata
from ..layers import resolve_layer
from ..runtime.core import Runtime, format_bytes
from ..zoo import LoadedModel
from ..zoo.weights import weights_fingerprint
from .app import app, deferred_signals, guarded
from .options import (
    BatchOption,
    DeviceOption,
    ModelOption,
    OutOption,
    PreprocessingOption,
    QuietOption,
    SeedOption,
    WeightsOption,
    at_least,
    load,
    parse_indices,
    recipe_options,
    runtime_options,
)
from .progress import RenderProgress


def announce_batch_size(loaded: LoadedModel, objectives: Sequence[Objective], copies: int, recipe: Recipe,
                        runtime: Runtime, batch_size: Optional[int], quiet: bool) -> int:
    """The batch size to use, said in one line on stderr with the precision (which and why) unless quiet."""
    count = len(objectives) * copies
    every = [o for o in objectives for _ in range(copies)]
    chosen, choice = choose_runtime(loaded, every, recipe, runtime)
    how = "given"
    if batch_size is None:
        batch_size = plan_batches(loaded, every, recipe, chosen)
        budget = chosen.memory_budget(loaded.device)
        how = f"automatic: {format_bytes(budget)} budget at {recipe.output_size} px"
    if not quiet:
        why = "" if choice.reason == "as asked" else f" ({choice.reason})"
        typer.echo(f"{count} image(s) on {loaded.device}, {chosen.describe(why)}, batches of "
                   f"{min(batch_size, count)} ({how})", err=True)
    return batch_size


@app.command("visualize")
@guarded
@recipe_options
@runtime_options
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
    resume: Annotated[bool, typer.Option(
        "--resume/--no-resume", help="Skip objectives whose images are already in --out, made with the same model, "
                                     "recipe, seed and settings (read from their metadata).")] = True,
    display: Annotated[Optional[str], typer.Option(
        "--display", help="Models with other than 1 or 3 input channels: the channels shown as red, green, blue "
                          "in the PNG previews, e.g. 3,2,1 (the full arrays are saved as .npy).")] = None,
    model: ModelOption = "efficientnet_lite0",
    weights: WeightsOption = None,
    preprocessing: PreprocessingOption = None,
    out: OutOption = Path("out/visualize"),
    seed: SeedOption = 0,
    quiet: QuietOption = False,
    device: DeviceOption = "auto",
    batch_size: BatchOption = None,
    *,
    recipe: Recipe,
    runtime: Runtime,
) -> None:
    """Render what filters (or classes) respond to most, with the paper's multi-scale recipe.

    Writes one PNG per filter (named model-layer-fNNNN.png, with model, weights, layer, filter, seed, recipe and final activation in its metadata) and a grid of all of them.

    Example: filterscope visualize -m resnet34 -l layer4.2.relu -f 16,266,306 -o out/r34
    """
    from ..plots import image_grid, save_figure  # matplotlib: imported only by the commands that draw

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
    at_least(copies, 1, "--copies")
    at_least(batch_size, 1, "--batch-size")
    check_output(out, folder=True)  # before any work: a bad place fails now, not after minutes of rendering
    parsed = [parse_objective(text) for text in objective or []]  # syntax errors before loading anything
    loaded = load(model, weights, seed, device, quiet, preprocessing)
    objectives: list[Objective]
    if classes is not None:
        objectives = [ClassLogit(i) for i in parse_indices(classes, "--classes")]
        title_layer = "output"
    elif parsed:
        objectives = parsed
        title_layer = "objectives"
    else:
        assert layer is not None and filters is not None  # checked above
        ref = resolve_layer(loaded, layer)
        if str(ref) != layer:
            typer.echo(f"layer {layer} → {ref}")
        kind = Neuron if neuron else Channel
        objectives = [kind(ref, i) for i in parse_indices(filters, "--filters")]
        title_layer = str(ref)
    objectives = [o.resolve(loaded) for o in objectives]  # every index checked before any work
    shown = _display(display, loaded.preprocessing.channels)

    # what makes an image the same (filterscope.identity): weights, objective, recipe, seed, requested settings
    weights_hash = weights_fingerprint(loaded.module)
    settings = RenderSettings.of(loaded, runtime)
    identities = [[RenderIdentity.of(weights_hash, o, recipe, seed, settings, n) for n in range(copies)]
                  for o in objectives]
    started = time.perf_counter()
    panels: dict[tuple[int, int], tuple[Image.Image, str]] = {}
    failed: list[str] = []  # non-finite: not saved
    flat: list[str] = []  # not-improved: saved, with their status, and named
    with OutputLock(out):
        remove_stale_parts(out)
        done = finished_outputs(out, loaded.name, objectives, identities) if resume else {}
        for index, paths in done.items():
            for n, path in enumerate(paths):
                with Image.open(path) as image:
                    panels[(index, n)] = (image.copy(), objectives[index].title)
                if read_png_metadata(path).get("status") == "not-improved":
                    flat.append(objectives[index].description)
        todo = [i for i in range(len(objectives)) if i not in done]
        if done:
            typer.echo(f"resuming: {len(done)} of {len(objectives)} objective(s) are already in {out} (same weights, "
                       f"recipe, seed and settings); rendering the other {len(todo)} (--no-resume renders all)",
                       err=True)
        if todo:
            _render(loaded, [objectives[i] for i in todo], todo, identities, recipe, seed, runtime, batch_size,
                    quiet, out, shown, title_layer, panels, failed, flat)
        keys = sorted(panels)
        images, titles = [panels[k][0] for k in keys], [panels[k][1] for k in keys]
        if images:  # still holding the folder's lock
            fig = image_grid(images, titles, suptitle=f"{loaded.name} {title_layer} "
                                                      f"({str(loaded.weights).split(' (')[0]}), seed {seed}")
            name = grid_name(loaded.name, objectives, classes is not None, bool(parsed))
            typer.echo(f"{save_figure(fig, out / name)}  grid of {len(images)} ({time.perf_counter() - started:.0f} s)")
    if failed:
        raise FilterscopeError(f"{len(failed)} of {len(failed) + len(images)} image(s) went non-finite (NaN or "
                               f"infinity) and were not saved: {', '.join(failed[:5])}"
                               f"{', ...' if len(failed) > 5 else ''}")
    if flat:
        raise FilterscopeError(f"{len(flat)} of {len(images)} visualization(s) are not-improved (the objective did not "
                               f"rise: the image shows nothing of the unit): {', '.join(flat[:5])}"
                               f"{', ...' if len(flat) > 5 else ''}; {_flat_hint(loaded, recipe)}")


def _render(loaded: LoadedModel, objectives: list[Objective], indices: list[int],
            identities: list[list[RenderIdentity]], recipe: Recipe, seed: int, runtime: Runtime,
            batch_size: Optional[int], quiet: bool, out: Path,
            shown: Optional[tuple[int, ...]], title_layer: str, panels: dict[tuple[int, int], tuple[Image.Image, str]],
            failed: list[str], flat: list[str]) -> None:
    """Render ``objectives`` (objective ``i`` as many times as ``identities[indices[i]]`` has copies), save every
    finished batch, each PNG with its identity's key, at once (whole, even if Ctrl-C
    arrives meanwhile), report each image, and collect the grid's panels under ``(index, copy)``."""
    copies = len(identities[indices[0]])
    batch_size = announce_batch_size(loaded, objectives, copies, recipe, runtime, batch_size, quiet)
    slots = iter([(index, n) for index in indices for n in range(copies)])
    progress = RenderProgress(f"{loaded.name} {title_layer}", None, quiet)
    try:
        for result in iter_render(loaded, objectives, recipe=recipe, seed=seed, batch_size=batch_size,
                                  copies=copies, runtime=runtime, callback=progress):
            batch = [next(slots) for _ in range(len(result))]
            with deferred_signals():
                save_result(result, out, display=shown, identities=[identities[i][n] for i, n in batch])
            for i, (obj, slot) in enumerate(zip(result.objectives, batch)):
                before, after = float(result.initial_values[i]), float(result.values[i])
                if result.status[i] == "non-finite":
                    failed.append(obj.description)
                    progress.write(f"error: {obj.description}: the optimization produced NaN or infinity "
                                   "(lower --lr, check the model); no image saved")
                    continue
                hint = "" if recipe.relu_override_steps else "; try --relu-override 16"
                note = f"  (never activated: the unit is at exactly 0{hint})" if result.status[i] == "inactive" else ""
                if result.status[i] == "not-improved":
                    flat.append(obj.description)
                    note = "  (not-improved: the objective did not rise)"
                progress.write(f"{out / result.file_name(i)}  {obj.description}: activation {before:.3g} → "
                               f"{after:.3g}{note}")
                panels[slot] = (result.pil(i, shown), obj.title)
    finally:
        progress.close()


def _flat_hint(loaded: LoadedModel, recipe: Recipe) -> str:
    """What to try when an objective did not rise."""
    if loaded.weights.kind == "random" and not loaded.weights.calibrated:
        return "the random network's batch-norm statistics were never estimated (its activations vanish)"
    tries = ["a higher --lr", "more --steps"] + ([] if recipe.relu_override_steps else ["--relu-override 16"])
    return "try " + ", ".join(tries) + ", or check that the unit responds to images (filterscope top)"


def grid_name(model_name: str, objectives: Sequence[Objective], classes: bool, expressions: bool) -> str:
    """The grid figure's file name: ``MODEL-LAYER-grid.png``, or ``MODEL-classes-grid.png``/``-objectives-``."""
    if classes or expressions:
        return f"{model_name}-{'classes' if classes else 'objectives'}-grid.png"
    return output_name(model_name, objectives[0]).rsplit("-", 1)[0] + "-grid.png"


def _display(text: Optional[str], channels: int) -> Optional[tuple[int, ...]]:
    """``--display 3,2,1`` checked against the model's channels."""
    if text is None:
        return None
    shown = tuple(parse_indices(text, "--display"))
    if not 1 <= len(shown) <= 3 or not all(0 <= c < channels for c in shown):
        raise InvalidOptionError(f"--display takes 1 to 3 channels of the model's {channels} (0-{channels - 1}), "
                                 f"e.g. 3,2,1; got {text!r}")
    return shown
