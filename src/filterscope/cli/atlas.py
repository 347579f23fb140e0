"""The ``atlas`` command group: build an atlas (renders and dataset exemplars of whole layers), see what
it holds and what is left, show one unit's record, check its files against their records."""

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from tqdm.auto import tqdm

from ..atlas import Atlas, BuildProgress, BuildSummary, build_atlas, list_dataset
from ..atlas.distributed import dask_executor, parse_cluster
from ..atlas.stages import STAGES
from ..atlas.stages.concepts import ConceptSettings
from ..atlas.stages.diff import DiffSettings
from ..atlas.store import AtlasStore
from ..engine.recipes import get_recipe
from ..engine.results import StepInfo
from ..errors import AtlasError, InvalidOptionError
from ..files import check_output
from ..runtime.core import Runtime
from ..zoo.preprocessing import FITS
from .app import app, guarded
from .options import (
    BatchOption,
    DeviceOption,
    FitOption,
    ModelOption,
    PreprocessingOption,
    QuietOption,
    SeedOption,
    WeightsOption,
    at_least,
    check_list,
    load,
    parse_indices,
    recipe_overrides,
    runtime_options,
)

atlas_app = typer.Typer(
    help="Atlases: every unit of a model's layers rendered once, with dataset exemplars and statistics, in a "
         "resumable folder (SQLite + images).",
    no_args_is_help=True,
)
app.add_typer(atlas_app, name="atlas")


class _Bars(BuildProgress):
    """Progress bars on stderr for a build, one per stage as it runs (images/s or units/s, ETA), and its lines."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Optional[tqdm] = None
        self.current = ""

    def message(self, text: str, *, warning: bool = False) -> None:
        if self.quiet and not warning:
            return
        text = f"error: {text}" if warning else text
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            typer.echo(text, err=True)

    def stage(self, name: str, done: int, total: int, note: str = "") -> None:
        if self.bar is None or self.current != name or self.bar.total != total:
            self.close()
            self.current = name
            self.bar = tqdm(total=total, desc=name, unit=STAGES.get(name).counts if name in STAGES else "item",
                            disable=self.quiet, leave=False, file=sys.stderr, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)
        if note:
            self.bar.set_postfix_str(note, refresh=True)

    def step(self, info: StepInfo) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"batch {info.chunk + 1}/{info.chunks} step {info.steps_done}/{info.total_steps} "
                                     f"({info.width}px)", refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.current = ""


@atlas_app.command("build")
@guarded
@recipe_overrides
@runtime_options
def build_command(
    out: Annotated[Path, typer.Argument(help="The atlas folder (created when missing; an existing atlas is "
                                             "completed).", show_default=False)],
    layers: Annotated[str, typer.Option("--layers", "--layer", "-l", help="Layers, separated by commas: "
                                                                           "_blocks.8,_blocks.15")],
    units: Annotated[Optional[str], typer.Option(
        "--units", "-u", help="Units (channels) of each layer: 0-63 or 3,7,12 (default: every unit).")] = None,
    recipe: Annotated[Optional[list[str]], typer.Option(
        "--recipe", help="A named recipe or recipe file; repeat for several images per unit (default: paper). "
                         "'none': no renders, exemplars only.", rich_help_panel="Recipe")] = None,
    dataset: Annotated[Optional[Path], typer.Option(
        "--dataset", help="Folder of images (searched recursively) or a text file listing image paths: the "
                          "exemplars and statistics of every unit come from it.")] = None,
    exemplars: Annotated[int, typer.Option("--exemplars", help="Exemplars per unit and kind (top by maximum, top by "
                                                               "mean, most negative).")] = 9,
    scores: Annotated[bool, typer.Option("--scores/--no-scores", help="Quality scores of each render (activation "
                                                                      "ratio, robustness, high frequencies).")] = True,
    circuits: Annotated[Optional[bool], typer.Option(
        "--circuits/--no-circuits", help="Each unit's circuit: its inputs from the layer built before it (expanded "
        "weights, attribution, the causal check), its outputs, the classes it pushes. Default: on when the build "
        "renders, off for --recipe none.", show_default=False)] = None,
    trust: Annotated[Optional[bool], typer.Option(
        "--trust/--no-trust", help="Each unit's trust scores (path similarity, machine 2-AFC) and description, after "
        "the renders (needs --dataset of 20 images or more). Default: on when the build renders, off for --recipe "
        "none.", show_default=False)] = None,
    activation_map: Annotated[bool, typer.Option("--map", help="An activation atlas of each layer (default "
                                                 "settings; filterscope atlas map for others): its samples are "
                                                 "collected in the exemplar pass (needs --dataset).")] = False,
    concepts: Annotated[Optional[int], typer.Option(
        "--concepts", help="A sparse dictionary of N concepts for each layer, trained on the exemplar pass's images "
        "(needs --dataset of 10 images or more; filterscope concepts for its options): stored in the atlas, trained "
        "once.", show_default=False)] = None,
    diff_with: Annotated[Optional[str], typer.Option(
        "--diff-with", help="Diff each layer against this network (a model spec; filterscope diff for its options) "
        "over the exemplar pass's images: CKA of the blocks, the layer's units matched with the other network's "
        "(needs --dataset).", show_default=False)] = None,
    diff_weights: Annotated[Optional[str], typer.Option(
        "--diff-weights", help="The --diff-with network's weights (e.g. a checkpoint of the same model).",
        show_default=False)] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Render again the units whose render "
                                                                      "failed in an earlier build.")] = False,
    cluster: Annotated[Optional[str], typer.Option(
        "--cluster", help="Run the pass and the renders on Dask: local:N (N worker processes on this machine) or a "
                          "scheduler's address, tcp://host:8786 (pip install 'filterscope[dask]'). The atlas is "
                          "written here; dataset paths must be readable from the workers.",
        rich_help_panel="Speed")] = None,
    fit: FitOption = "crop",
    model: ModelOption = "efficientnet_lite0",
    weights: WeightsOption = None,
    preprocessing: PreprocessingOption = None,
    seed: SeedOption = 0,
    quiet: QuietOption = False,
    device: DeviceOption = "auto",
    batch_size: BatchOption = None,
    *,
    overrides: dict[str, Any],
    runtime: Runtime,
) -> None:
    """Render every unit of the given layers and find their dataset exemplars, into an atlas folder.

    Only what the atlas lacks is done: run it again after an interruption (even kill -9) and it finishes the job without redoing or losing anything. A second build on the same folder waits for the first.

    Example: filterscope atlas build out/atlas -l _blocks.8,_blocks.15 --units 0-15 --dataset photos/
    """
    at_least(exemplars, 1, "--exemplars")
    at_least(batch_size, 1, "--batch-size")
    if fit not in FITS:
        raise InvalidOptionError(f"Unknown --fit {fit!r}: use {', '.join(FITS)}")
    check_output(out, folder=True)
    if (out / "atlas.sqlite").exists():
        AtlasStore(out).close()  # a corrupt or newer atlas fails now, before the model loads
    elif out.is_dir() and any(p.name != ".build.lock" for p in out.iterdir()):
        raise AtlasError(f"{out} is not empty and is not an atlas (no atlas.sqlite): choose a new or empty folder")
    check_list(layers, "--layers")
    names = [name.strip() for name in layers.split(",") if name.strip()]
    if not names:
        raise InvalidOptionError("--layers names no layer")
    recipes = recipe or ["paper"]
    # every recipe checked before the model loads; --size, --steps, ... change each of them
    chosen = [] if recipes == ["none"] else [get_recipe(r).replace(**overrides) for r in recipes]
    unit_list = parse_indices(units, "--units") if units is not None else None
    data = list_dataset(dataset) if dataset is not None else None
    if not chosen and data is None:
        raise InvalidOptionError("--recipe none renders nothing: give a --dataset for exemplars")
    if activation_map and data is None:
        raise InvalidOptionError("--map needs a --dataset: the map's samples come from the exemplar pass")
    if concepts is not None and data is None:
        raise InvalidOptionError("--concepts needs a --dataset: the dictionary is trained on the pass's images")
    if diff_weights is not None and diff_with is None:
        raise InvalidOptionError("--diff-weights goes with --diff-with MODEL (use the atlas's model name to compare "
                                 "two checkpoints)")
    if diff_with is not None and data is None:
        raise InvalidOptionError("--diff-with needs a --dataset: the networks are compared over the pass's images")
    extra: list[object] = [ConceptSettings(atoms=concepts)] if concepts is not None else []
    if diff_with is not None:
        extra.append(DiffSettings(model=diff_with, weights=diff_weights, seed=seed))
    if cluster is not None:
        parse_cluster(cluster)  # a malformed address fails before the model loads
    loaded = load(model, weights, seed, device, quiet, preprocessing)
    bars = _Bars(quiet)
    try:
        with dask_executor(cluster) as executor:
            if executor is not None and not quiet:
                typer.echo(executor.describe(), err=True)
            summary = build_atlas(out, loaded, names, units=unit_list, recipes=chosen, seeds=[seed], dataset=data,
                                  exemplars=exemplars, scores=scores, fit=fit, runtime=runtime, batch_size=batch_size,
                                  retry_failed=retry_failed, progress=bars, executor=executor, circuits=circuits,
                                  trust=trust, maps=activation_map, stages=extra)
    finally:
        bars.close()
    parts = [f"{summary.rendered} render(s) done"]
    if summary.already:
        parts.append(f"{summary.already} already in the atlas")
    if summary.passes:
        parts.append(f"exemplar pass over {len(data or ())} images ({summary.pass_images_per_second:.1f} images/s)")
    if summary.crops:
        parts.append(f"{summary.crops} exemplar crops")
    if summary.circuits:
        parts.append(f"{summary.circuits} unit circuit(s)")
    if summary.trust:
        parts.append(f"{summary.trust} trust record(s)")
    if summary.maps or summary.icons:
        parts.append(f"{summary.maps} activation map(s), {summary.icons} icon(s)")
    for stage, what in (("concepts", "concept dictionary(ies)"), ("diff", "diff(s)")):
        if summary.of(stage).done:
            parts.append(f"{summary.of(stage).done} {what}")
    typer.echo(f"{out}: {', '.join(parts)} in {summary.seconds:.0f} s")
    for stage, what in (("concepts", "concept dictionary(ies)"), ("diff", "diff(s)")):
        if summary.of(stage).failed:
            raise AtlasError(f"{len(summary.of(stage).failed)} {what} failed ({summary.of(stage).failed[0]}); the "
                             "next build does them again")
    if summary.failed:
        raise AtlasError(f"{len(summary.failed)} render(s) failed and are recorded as failed ({summary.failed[0]}); "
                         "--retry-failed renders them again")
    check_icons(summary)
    if summary.not_improved:
        raise AtlasError(f"{len(summary.not_improved)} render(s) are not-improved (the objective did not rise: "
                         f"{', '.join(summary.not_improved[:3])}{', ...' if len(summary.not_improved) > 3 else ''}); "
                         "they are recorded and shown marked; try another --recipe, more --steps or a higher --lr")


@atlas_app.command("status")
@guarded
def status_command(
    out: Annotated[Path, typer.Argument(help="The atlas folder.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """What an atlas holds and what is left: renders per layer, recipe and seed; exemplar passes and activation
    atlases per layer."""
    with Atlas(out, create=False) as atlas:
        found = atlas.status()
    if as_json:
        typer.echo(json.dumps(found.to_dict(), indent=2))
        return
    typer.echo(f"atlas {out} (schema {found.schema})")
    if not found.renders and not found.passes:
        typer.echo("  empty: nothing built yet")
    if found.renders:
        typer.echo(f"  {'model':<20} {'layer':<16} {'recipe':<12} {'seed':>4} {'done':>6} {'inactive':>8} "
                   f"{'not-improved':>12} {'failed':>6} {'left':>6}")
        for r in found.renders:
            typer.echo(f"  {r.model:<20} {r.layer:<16} {r.recipe:<12} {r.seed:>4} {r.done:>6} {r.inactive:>8} "
                       f"{r.not_improved:>12} {r.failed:>6} {r.pending:>6}")
    for p in found.passes:
        state = (f"done, crops for {p.units_with_crops} of {p.units} units" if p.status == "done"
                 else "not finished (the next build resumes it)")
        typer.echo(f"  exemplars {p.model} {p.layer}: {p.images} images from {p.dataset}: {state}")
    for m in found.maps:
        what = f", class {m.label_class}" if m.label_class is not None else ""
        trust = f", trustworthiness {m.trustworthiness:.3f}" if m.trustworthiness is not None else ""
        failed = f", {m.failed_icons} failed" if m.failed_icons else ""
        rest = "" if m.icons == m.cells else f"{failed} (the next atlas map renders the rest)"
        typer.echo(f"  activation atlas {m.model} {m.layer}: {m.cells} cells of {m.grid}x{m.grid} "
                   f"({m.positions} positions{what}){trust}, {m.icons} of {m.cells} icons{rest}")
    for s in found.stages:
        typer.echo(f"  {s.stage} {s.model} {s.layer}: {s.text}")
    left = found.renders_left
    typer.echo(f"  {left} render(s) left" if left else "  nothing left to render")


@atlas_app.command("check")
@guarded
def check_command(
    out: Annotated[Path, typer.Argument(help="The atlas folder.", show_default=False)],
    repair: Annotated[bool, typer.Option("--repair", help="Mark what is damaged for the next build to redo (and "
                                         "remove the damaged files).")] = False,
) -> None:
    """Check an atlas: the database's integrity, every file a record names against its recorded size and SHA-256,
    every exemplar image. One line per problem, exit 1 when there is one; with --repair, the next
    `atlas build` (or `atlas map`) redoes exactly what was damaged.

    Example: filterscope atlas check out/atlas --repair
    """
    from ..atlas.check import check_atlas
    from ..atlas.check import repair as repair_atlas

    with AtlasStore(out, create=False) as store:
        problems = check_atlas(store)
        files = store.file_count()
        if not problems:
            typer.echo(f"atlas {out} is sound: database ok, {files} recorded file(s) match, exemplar images readable")
            return
        for problem in problems:
            typer.echo(problem.line(), err=True)
        if any(p.kind == "database" for p in problems):
            raise AtlasError(f"{out}: the database is damaged; restore the folder from a copy")
        if not repair:
            raise AtlasError(f"{len(problems)} problem(s) in {out}: filterscope atlas check {out} --repair marks "
                             "them for the next build to redo")
        marked = repair_atlas(store, problems)
    what = ", ".join(f"{n} {STAGES.get(kind).redone}" for kind, n in sorted(marked.items()))
    typer.echo(f"repaired {out}: {what}; run the same atlas build (and atlas map) again to redo them")


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.4g}"


@atlas_app.command("show")
@guarded
def show_command(
    out: Annotated[Path, typer.Argument(help="The atlas folder.", show_default=False)],
    layer: Annotated[str, typer.Argument(help="A layer of the atlas.", show_default=False)],
    unit: Annotated[int, typer.Argument(help="The unit (channel) index.", show_default=False)],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="The model, when the atlas holds several.")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole record as JSON.")] = False,
) -> None:
    """One unit's record: its renders (recipe, seed, activations, scores, image file), exemplars and statistics."""
    with Atlas(out, create=False) as atlas:
        record = atlas.unit(layer, unit, model)
        cofiring = atlas.store.cofiring(layer, unit, 5, model)
    if as_json:
        data = record.to_dict()
        data["cofiring"] = [{"unit": u, "correlation": c} for u, c in cofiring]
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    typer.echo(f"{record.model} {record.layer} unit {record.unit} (of {record.channels})")
    if not record.renders:
        typer.echo("  renders: none yet")
    for r in record.renders:
        typer.echo(f"  render {r.recipe_name} seed {r.seed}: {r.status}, activation {_fmt(r.initial_activation)} → "
                   f"{_fmt(r.final_activation)}, ratio {_fmt(r.activation_ratio)}, robustness {_fmt(r.robustness)}, "
                   f"high-frequency share {_fmt(r.high_frequency_share)}"
                   + (f", {out / r.file}" if r.file else "") + (f" ({r.message})" if r.message else ""))
    s = record.stats
    if s is not None:
        typer.echo(f"  statistics over {s.images} images of {record.dataset}: mean {_fmt(s.mean)}, std {_fmt(s.std)}, "
                   f"max {_fmt(s.max)}, min {_fmt(s.min)}, positive in {s.fraction_positive:.0%} of images")
    for kind, label in (("max", "top by maximum"), ("mean", "top by mean"), ("min", "most negative")):
        items = record.exemplars.get(kind, [])
        if items:
            typer.echo(f"  {label}: " + ", ".join(f"{Path(e.path).name} ({e.value:.3g})" for e in items))
    if not record.exemplars:
        typer.echo("  exemplars: none yet (build with --dataset)")
    if cofiring:
        typer.echo("  fires together with: " + ", ".join(f"unit {u} (r={c:.2f})" for u, c in cofiring))


def check_icons(summary: BuildSummary) -> None:
    """Exit 1 naming the first failed map-icon task, as for failed renders."""
    if summary.icon_failures:
        raise AtlasError(f"{len(summary.icon_failures)} map icon task(s) failed ({summary.icon_failures[0]}); "
                         "the same command renders their icons again")
