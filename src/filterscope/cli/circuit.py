"""The ``circuit`` command: how one unit is built from an earlier layer's units, what it feeds, which classes
it pushes, and whether those weights explain it (the causal check)."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..analysis import collect_images
from ..atlas.store import AtlasStore
from ..circuits import Circuit, Connection, circuit
from ..circuits.evidence import DRAWS
from ..engine.recipes import get_recipe
from ..files import atomic_write_text, check_output
from ..layers import layer_slug
from ..zoo.model import LoadedModel
from .app import app, guarded
from .options import (
    DeviceOption,
    FitOption,
    ModelArgument,
    OutOption,
    PreprocessingOption,
    QuietOption,
    SeedOption,
    WeightsOption,
    at_least,
    load,
)
from .pictures import unit_images


def _row(c: Connection) -> str:
    shown = f"{c.attribution:>12.4g}" if c.attribution is not None else f"{'-':>12}"
    return f"{c.unit:>6}  {c.weight:>10.4g}  {shown}"


def _print(found: Circuit) -> None:
    typer.echo(f"{found.model} {found.layer} unit {found.unit} from {found.source}: expanded weights "
               f"{found.kernel_size[0]}x{found.kernel_size[1]}, attribution over {found.exemplars} exemplar(s)")
    for label, items in (("excite", found.excite), ("inhibit", found.inhibit), ("drive (attribution)", found.attributed)):
        typer.echo(f"  {label}:" + ("" if items else " none"))
        if items:
            typer.echo(f"  {'unit':>6}  {'weight':>10}  {'attribution':>12}")
            for c in items:
                typer.echo("  " + _row(c))
    if found.note:
        typer.echo(f"note: {found.note}")
    if found.outputs_to is not None:
        for label, items in zip(("excites", "inhibits"), found.outputs):
            typer.echo(f"  {found.outputs_to} units it {label}: "
                       + (", ".join(f"{c.unit} ({c.weight:.3g})" for c in items) or "none"))
    for label, items in (("promotes", found.promoted), ("suppresses", found.suppressed)):
        if items:
            typer.echo(f"  classes it {label}: " + ", ".join(f"{c.name or c.unit} ({c.weight:.3g})" for c in items))
    check = found.ablation
    if check is not None:
        random = sum(abs(d) for d in check.random_drops) / max(len(check.random_drops), 1)
        typer.echo(f"causal check (top {check.k} inputs zeroed, mean over {found.exemplars} exemplars at the unit's "
                   f"maximum, baseline {check.baseline:.4g}): "
                   + "; ".join(f"by {view}: drop {check.drops[view]:.4g} = {check.ratios[view]:.1f}x random"
                               for view in check.drops)
                   + f" (random {check.k}: mean |drop| {random:.4g} over {len(check.random_drops)} draws)")


def _atlas_view(path: Path, loaded: LoadedModel, layer: str, unit: int) -> tuple[list[str], str, AtlasStore]:
    """The unit's top exemplars by maximum (image paths) and the fit of the pass, from an atlas."""
    store = AtlasStore(path, create=False, readonly=True)
    record = store.unit(layer, unit, store.model(loaded.name).name)
    exemplars = [e.path for e in record.exemplars.get("max", [])]
    found = store.latest_pass(store.layer(store.model(loaded.name), layer).id)
    fit = store.pass_fit(found.id) if found is not None else "crop"
    return exemplars, fit, store


@app.command("circuit")
@guarded
def circuit_command(
    model: ModelArgument,
    layer: Annotated[str, typer.Option("--layer", "-l", help="The unit's layer (any accepted form).")],
    unit: Annotated[int, typer.Option("--unit", "-u", help="The unit (filter) of that layer.")],
    source: Annotated[str, typer.Option("--from", help="An earlier layer whose units build this one.")],
    k: Annotated[int, typer.Option("-k", "--top", help="How many inputs (outputs, classes) of each sign.")] = 8,
    to: Annotated[Optional[str], typer.Option("--to", help="A later layer: also list the units this one feeds.")] = None,
    atlas: Annotated[Optional[Path], typer.Option(
        "--atlas", help="An atlas: its exemplars of the unit for the attribution and the check, its renders "
                        "for the figure.")] = None,
    images: Annotated[Optional[list[Path]], typer.Option(
        "--images", help="Images (files or folders) to find the unit's exemplars in (default: the atlas's, else "
                         "scikit-image's photos and crops of them).")] = None,
    exemplars: Annotated[int, typer.Option("--exemplars", help="How many exemplars (0: no attribution, no check).")] = 8,
    ablate: Annotated[int, typer.Option("--ablate", help="Inputs the causal check zeroes (0: no check).")] = 5,
    draws: Annotated[int, typer.Option("--draws", help="Random input sets the check compares with.")] = DRAWS,
    recipe: Annotated[str, typer.Option("--recipe", help="Recipe for the figure's images the atlas lacks.")] = "filterscope",
    figure: Annotated[bool, typer.Option("--figure/--no-figure", help="Write the figure (renders missing images).")] = True,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the circuit as JSON.")] = None,
    weights: WeightsOption = None,
    preprocessing: PreprocessingOption = None,
    fit: FitOption = "crop",
    out: OutOption = Path("out/circuit"),
    seed: SeedOption = 0,
    quiet: QuietOption = False,
    device: DeviceOption = "auto",
) -> None:
    """How a unit is built from the units of an earlier layer: expanded weights (the network linearized) beside
    data-aware attribution on its top exemplars, the causal check (its top inputs zeroed against random ones),
    the units it feeds (--to) and the classes it promotes and suppresses.

    Writes a figure in the style of "Visualizing Weights": each input's optimized image beside its kernel, red
    where it excites, blue where it inhibits.

    Example: filterscope circuit efficientnet_lite0 -l _blocks.15 -u 16 --from _blocks.14 -k 8
    """
    from ..plots import circuit_figure, save_figure

    at_least(k, 1, "-k")
    for value, option in ((exemplars, "--exemplars"), (ablate, "--ablate"), (draws, "--draws")):
        at_least(value, 0, option)
    get_recipe(recipe)  # a bad name fails before any work
    check_output(out, folder=True)
    if json_path is not None:
        check_output(json_path, folder=False)
    loaded = load(model, weights, seed, device, quiet, preprocessing)
    store, pictures = None, None
    if atlas is not None:
        paths, fit, store = _atlas_view(atlas, loaded, layer, unit)
        pictures = paths or None
    if images:
        pictures = [str(p) for p in collect_images(images)]
    if not quiet:
        typer.echo(f"computing the circuit of {layer} unit {unit} from {source}...", err=True)
    found = circuit(loaded, layer, unit, source, k=k, to=to, images=pictures, exemplars=exemplars, ablate=ablate,
                    draws=draws, seed=seed, fit=fit)
    _print(found)
    if json_path is not None:
        typer.echo(f"wrote {atomic_write_text(json_path, json.dumps(found.to_dict(), indent=1) + chr(10))}")
    if figure:
        inputs = sorted({c.unit for c in found.excite + found.inhibit})
        pictures_of = unit_images(loaded, store, str(found.source), inputs, recipe, seed, quiet, out / "units")
        own = unit_images(loaded, store, str(found.layer), [unit], recipe, seed, quiet, out / "units")[unit]
        panel = lambda c: (f"{c.unit}: {c.weight:.3g}", pictures_of.get(c.unit), c.kernel)  # noqa: E731
        fig = circuit_figure(f"{found.layer} unit {unit}", own, [panel(c) for c in found.excite],
                             [panel(c) for c in found.inhibit],
                             suptitle=f"{loaded.name}: {found.layer} unit {unit} from {found.source} (expanded weights)")
        name = f"{loaded.name}-{layer_slug(found.layer)}-u{unit}-from-{layer_slug(found.source)}.png"
        typer.echo(f"wrote {save_figure(fig, out / name)}")
