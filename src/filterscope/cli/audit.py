"""The ``audit`` command: a red-team audit of the trust signals on manipulated copies of the user's network
(:mod:`filterscope.audit`)."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer

from ..analysis import collect_images, prepare_image
from ..audit import AuditReport, audit_figure, audit_layer
from ..audit.audit import MIN_PHOTOS, SILENT_SHARE
from ..engine.recipes import get_recipe
from ..errors import InvalidOptionError
from ..files import atomic_write_text, check_output
from ..trust import independent_network
from ..trust.judges import JUDGES
from .app import app, guarded
from .options import (
    DeviceOption,
    ModelArgument,
    OutOption,
    PreprocessingOption,
    QuietOption,
    WeightsOption,
    at_least,
    load,
)


@app.command("audit")
@guarded
def audit_command(
    model: ModelArgument,
    layer: Annotated[str, typer.Option("--layer", "-l", help="The layer whose units are manipulated and audited.")],
    images: Annotated[list[Path], typer.Option(
        "--images", help=f"Your photos (files or folders; {MIN_PHOTOS} at least, a few hundred diverse ones is "
                         "better): half fit the manipulations, half are the trust scores' dataset.")],
    fooling: Annotated[int, typer.Option("--fooling", help="Fooling units (their pictures show another unit).")] = 4,
    silent: Annotated[int, typer.Option("--silent", help="Silent units (near zero on photos).")] = 4,
    untouched: Annotated[int, typer.Option("--untouched", help="Untouched units of the same network.")] = 12,
    recipe: Annotated[str, typer.Option("--recipe", help="The recipe of the renders.")] = "filterscope",
    copies: Annotated[int, typer.Option("--copies", help="Renders of each sign per unit (and references per 2-AFC "
                                                         "task).")] = 3,
    independent: Annotated[Optional[str], typer.Option(
        "--independent", help="The network that judges similarity (default efficientnet_lite2).",
        show_default=False)] = None,
    judge: Annotated[Optional[str], typer.Option(
        "--judge", help="The 2-AFC task's feature space: matched (default), pooled, colour-texture.",
        show_default=False)] = None,
    weights: WeightsOption = None,
    preprocessing: PreprocessingOption = None,
    out: OutOption = Path("out/audit"),
    seed: Annotated[int, typer.Option("--seed", help="Seeds the units drawn, the renders and the 2-AFC tasks.")] = 0,
    quiet: QuietOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Red-team the trust signals: manipulate units of LAYER on a copy of MODEL (fooling units whose pictures show another unit, after Geirhos et al. 2024; silent units, near zero on photos), render them and untouched units, and report for each signal (another-path, renders-2afc, silent, overdrive, any) its ROC AUC and its detection and false-alarm rates at the default threshold.

    Writes OUT/audit.json and OUT/audit.png (ROC curves). About 10 minutes for a middle layer of EfficientNet-Lite0 with the defaults on 2 cores.

    Example: filterscope audit efficientnet_lite0 -l _blocks.8 --images photos/
    """
    for value, option in ((fooling, "--fooling"), (silent, "--silent")):
        at_least(value, 0, option)
    at_least(untouched, 2, "--untouched")
    at_least(copies, 1, "--copies")
    get_recipe(recipe)  # a bad name fails before any work
    if judge is not None:
        JUDGES.get(judge)
    check_output(out, folder=True)
    files = collect_images(images)
    if len(files) < MIN_PHOTOS:
        raise InvalidOptionError(f"--images gave {len(files)} photos; the audit needs at least {MIN_PHOTOS}")
    loaded = load(model, weights, seed, device, quiet, preprocessing)
    network = independent_network(independent, explained=loaded.name)
    photos = torch.stack([prepare_image(loaded, path).pixels for path in files])

    def say(message: str) -> None:
        if not quiet:
            typer.echo(f"audit: {message}", err=True)

    report = audit_layer(loaded, layer, photos, network, fooling=fooling, silent=silent, untouched=untouched,
                         recipe=recipe, copies=copies, judge=judge, seed=seed, progress=say)
    typer.echo(summary(report))
    out.mkdir(parents=True, exist_ok=True)
    typer.echo(f"wrote {atomic_write_text(out / 'audit.json', report.to_json())}")
    audit_figure(report).savefig(out / "audit.png", dpi=110)
    typer.echo(f"wrote {out / 'audit.png'}")
    sys.stdout.flush()


def summary(report: AuditReport) -> str:
    """The audit's table and what moved on the photos, as text."""
    d = report.drift
    top1 = f"top-1 unchanged on {d.top1:.0%} of the held-out photos; " if d.top1 is not None else ""
    lines = [f"{report.model} {report.layer}: {len(report.units)} units audited in {report.seconds:.0f} s "
             f"({report.recipe} renders, {report.photos} photos)",
             f"on natural photos: {top1}fooling units within {d.fooling:.1%} of their largest value, the gate open on "
             f"{d.gate_open:.0%}; untouched units within {d.error:.1%}",
             f"{'signal':<14}{'manipulation':<14}{'AUROC':>7}{'detected':>10}{'false alarms':>14}"]
    for s in report.scores():
        detected = f"{s.detected:.0%}" if s.detected is not None else "-"
        alarms = f"{s.false_alarm:.0%}" if s.false_alarm is not None else "-"
        lines.append(f"{s.signal:<14}{s.kind:<14}{s.auroc:>7.2f}{detected:>10}{alarms:>14}")
    lines.append(f"(silent: below {SILENT_SHARE:.0%} of the layer's median unit; renders-2afc: below 90 % of the "
                 "unit's own exemplar sets, held to people's 0.76 of their margin above chance; another-path: p <= 0.1; any: any of them or not-improved)")
    return "\n".join(lines)
