"""The ``diff`` command: what two networks, or two checkpoints of one, share and where they differ
(:mod:`filterscope.compare`)."""

import csv
import io
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from PIL import Image, ImageOps

from ..analysis import collect_images
from ..compare import ModelDiff, diff
from ..compare.crosscoder import LATENT_KINDS
from ..compare.diff import MIN_IMAGES
from ..compare.figure import diff_figure, exclusive_figure
from ..compare.pictures import concept_renders, paired_renders, pairs_figure
from ..engine.recipes import get_recipe
from ..errors import InvalidOptionError
from ..files import atomic_write_text, check_output
from ..images import load_image
from ..plots import save_figure
from .app import app, guarded
from .options import DeviceOption, QuietOption, at_least, check_list, load
from .progress import ProgressBars

WeightsA = Annotated[Optional[str], typer.Option(
    "--weights-a", help="A's weights: 'default', 'random' (untrained, seeded) or a state-dict FILE.")]
WeightsB = Annotated[Optional[str], typer.Option(
    "--weights-b", help="B's weights (e.g. a fine-tuned checkpoint of the same model).")]


def _pairs(layers: list[str]) -> list[str | tuple[str, str]] | None:
    """``-l NAME`` (a layer both networks have) or ``-l NAME_A=NAME_B``."""
    out: list[str | tuple[str, str]] = []
    for text in layers:
        if text.count("=") > 1 or text.strip() in ("", "="):
            raise InvalidOptionError(f"--layer {text!r}: expected NAME (in both networks) or NAME_A=NAME_B")
        a, _, b = text.partition("=")
        if "=" in text and (not a.strip() or not b.strip()):
            raise InvalidOptionError(f"--layer {text!r}: expected NAME_A=NAME_B with both names")
        out.append((a.strip(), b.strip()) if b else a.strip())
    return out or None


def thumbnail(path: Path, side: int = 160) -> Image.Image:
    """An image file as a small square thumbnail (centre crop)."""
    return ImageOps.fit(load_image(path).convert("RGB"), (side, side))


def _names(text: Optional[str], option: str) -> list[str] | None:
    if text is None:
        return None
    check_list(text, option)
    return [part.strip() for part in text.split(",")]


@app.command("diff")
@guarded
def diff_command(
    a: Annotated[str, typer.Argument(help="Network A: a model name (see `filterscope models`) or FILE.py:FACTORY.",
                                     metavar="A", show_default=False)],
    b: Annotated[str, typer.Argument(help="Network B (the same name with --weights-b for two checkpoints).",
                                     metavar="B", show_default=False)],
    dataset: Annotated[list[Path], typer.Option(
        "--dataset", help=f"Your images (files or folders; {MIN_IMAGES} at least, a few hundred diverse ones is "
                          "better): both networks see the same ones.")],
    layer: Annotated[Optional[list[str]], typer.Option(
        "--layer", "-l", help="A layer pair whose units are matched: NAME (both networks) or NAME_A=NAME_B; "
                              "repeatable (default: A's deepest compared layer with its namesake in B, else B's "
                              "deepest).", show_default=False)] = None,
    layers_a: Annotated[Optional[str], typer.Option(
        "--layers-a", help="A's layers compared by CKA, comma-separated (default: its numbered blocks).",
        show_default=False)] = None,
    layers_b: Annotated[Optional[str], typer.Option(
        "--layers-b", help="B's layers compared by CKA (default: its numbered blocks).", show_default=False)] = None,
    grid: Annotated[int, typer.Option("--grid", help="CKA pools each image's activations to GRID x GRID regions.")]
    = 2,
    concepts: Annotated[Optional[int], typer.Option(
        "--concepts", help="Also train a crosscoder of this many concepts on each matched pair: which concepts both "
                           "networks have and which only one has (a few minutes; e.g. 4 x the two widths).",
        show_default=False)] = None,
    concept_k: Annotated[int, typer.Option("--concept-k", help="The crosscoder's active concepts per position (on "
                                                               "average).")] = 32,
    render: Annotated[int, typer.Option(
        "--render", help="Also render, in both networks side by side, the N best matched units of each matched pair "
                         "and the N least matched, and with --concepts the N most used shared concepts (with "
                         "--recipe).")] = 0,
    recipe: Annotated[str, typer.Option("--recipe", help="The recipe of --render's pictures.")] = "filterscope",
    biased: Annotated[bool, typer.Option("--biased", help="The biased CKA estimator (default: debiased).")] = False,
    weights_a: WeightsA = None,
    weights_b: WeightsB = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).")] = Path("out/diff"),
    seed: Annotated[int, typer.Option("--seed", help="Seeds random weights and the matching's null.")] = 0,
    quiet: QuietOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Compare two networks over the same images: linear CKA of every layer of A with every layer of B (the best partner of each), and for chosen layer pairs the unit matching (correlation over images and positions, one-to-one Hungarian matching, mutual best buddies, the share of units matched above a shuffled-image null).

    Writes OUT/diff.json, OUT/diff.png (the CKA heat map and the matching curves), OUT/matches-LAYER.csv (every matched pair with its correlation), with --concepts OUT/exclusive-LAYER.png (each network's concepts the other lacks) and with --render OUT/pairs-LAYER.png (matched units rendered in both networks) and OUT/shared-LAYER.png (shared concepts rendered in both).

    Example: filterscope diff efficientnet_lite0 efficientnet_lite1 --dataset photos/ -l _blocks.15
    """
    at_least(grid, 1, "--grid")
    at_least(concepts, 2, "--concepts")
    at_least(concept_k, 1, "--concept-k")
    at_least(render, 0, "--render")
    get_recipe(recipe)  # a bad name fails before any work
    pairs = _pairs(layer or [])
    names_a, names_b = _names(layers_a, "--layers-a"), _names(layers_b, "--layers-b")
    check_output(out, folder=True)
    files = collect_images(dataset)
    if len(files) < MIN_IMAGES:
        raise InvalidOptionError(f"--dataset gave {len(files)} images; a diff needs at least {MIN_IMAGES}")
    first = load(a, weights_a, seed, device, quiet, None)
    second = load(b, weights_b, seed, device, quiet, None)
    with ProgressBars(quiet) as progress:
        report = diff(first, second, files, layers_a=names_a, layers_b=names_b, pairs=pairs, grid=grid,
                      debiased=not biased, concepts=concepts, concept_k=concept_k, seed=seed, progress=progress)
    typer.echo(summary(report))
    out.mkdir(parents=True, exist_ok=True)
    typer.echo(f"wrote {atomic_write_text(out / 'diff.json', report.to_json())}")
    typer.echo(f"wrote {save_figure(diff_figure(report), out / 'diff.png')}")
    for match in report.matches:
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(["unit_a", "unit_b", "correlation", "buddies", "matched"])
        for m in match.matches:
            writer.writerow([m.a, m.b, f"{m.correlation:.4f}", int(m.buddies), int(m.correlation > match.threshold)])
        name = match.layer_a.replace("/", "_")
        typer.echo(f"wrote {atomic_write_text(out / f'matches-{name}.csv', table.getvalue())}")
    for match in report.matches if render else ():
        rendered = paired_renders(first, second, match, count=render, recipe=recipe, seed=seed)
        name = match.layer_a.replace("/", "_")
        typer.echo(f"wrote {save_figure(pairs_figure(rendered), out / f'pairs-{name}.png')}")
    for split in report.concepts if render else ():
        shared = concept_renders(first, second, split, count=render, recipe=recipe, seed=seed)
        if shared is not None:
            name = split.layer_a.replace("/", "_")
            typer.echo(f"wrote {save_figure(pairs_figure(shared), out / f'shared-{name}.png')}")
    for split in report.concepts:
        figure = exclusive_figure(split, lambda i: thumbnail(files[i]))
        if figure is not None:
            name = split.layer_a.replace("/", "_")
            typer.echo(f"wrote {save_figure(figure, out / f'exclusive-{name}.png')}")
    sys.stdout.flush()


def summary(report: ModelDiff, top: int = 5) -> str:
    """The diff as text: each layer of A's best partner, then each matching's summary and best pairs."""
    lines = [f"A: {report.model_a}", f"B: {report.model_b}",
             f"{report.images} images, {report.seconds:.0f} s; linear CKA ({'debiased' if report.debiased else 'biased'}"
             f", {report.grid}x{report.grid} regions per image)",
             f"{'layer of A':<16}{'best in B':<16}{'CKA':>7}{'same name':>11}"]
    same = dict(report.same_names())
    for name, partner, value in report.best():
        lines.append(f"{name:<16}{partner:<16}{value:>7.3f}" + (f"{same[name]:>11.3f}" if name in same else ""))
    for split in report.concepts:
        lines.append(f"concepts of {split.layer_a} ↔ {split.layer_b} ({len(split.latents)}, k={split.k}; on held-out "
                     f"images FVE A {split.fve_a:.2f}, B {split.fve_b:.2f}): " + ", ".join(
                         f"{split.count(kind)} {kind}" for kind in LATENT_KINDS)
                     + f"; exclusive and not readable from the other: A {len(split.exclusive('a'))}, "
                       f"B {len(split.exclusive('b'))}")
    for match in report.matches:
        lines.append(f"{match.layer_a} ↔ {match.layer_b}: {len(match.matched)} of {match.units_a} units of A matched "
                     f"({match.share:.0%}) above the shuffled-image threshold {match.threshold:.2f}; "
                     f"{len(match.buddies)} best buddies; {len(match.unmatched('b'))} of {match.units_b} units of B "
                     "unmatched")
        best = ", ".join(f"{m.a}↔{m.b} {m.correlation:.2f}" for m in match.matches[:top])
        lines.append(f"  best pairs: {best}")
    return "\n".join(lines)
