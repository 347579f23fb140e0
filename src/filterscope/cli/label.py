"""The ``label`` command: what each unit of a layer detects, as a scored formula with a p-value
(:mod:`filterscope.labels`)."""

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..analysis import collect_images
from ..errors import InvalidOptionError
from ..files import atomic_write_text, check_output
from ..labels import UnitLabel, label_layer
from ..labels.metrics import METRICS, metric
from ..labels.search import MIN_IMAGES, NULL_DRAWS
from .app import app, guarded
from .options import DeviceOption, ModelArgument, QuietOption, WeightsOption, at_least, load, parse_indices
from .progress import ProgressBars


@app.command("label")
@guarded
def label_command(
    model: ModelArgument,
    layer: Annotated[str, typer.Option("--layer", "-l", help="The layer whose units are labelled.")],
    dataset: Annotated[list[Path], typer.Option(
        "--dataset", help="Your images (files or folders): WordNet ids in their names or folders' names "
                          "(n01443537_goldfish.jpg) are their concepts; else the independent network labels them.")],
    units: Annotated[Optional[str], typer.Option("--units", "-u", help="Units, e.g. 0-15,40 (default: all).",
                                                 show_default=False)] = None,
    check: Annotated[Optional[str], typer.Option(
        "--check", help="Score this description instead of searching: a formula of concepts with AND, OR, NOT and "
                        "parentheses, e.g. \"terrier OR (dog AND NOT grass)\".", show_default=False)] = None,
    metric_name: Annotated[str, typer.Option("--metric", help=f"The score: {', '.join(METRICS)}.")] = "auprc",
    length: Annotated[int, typer.Option("--length", help="Concepts in a formula at most.")] = 3,
    beam: Annotated[int, typer.Option("--beam", help="Formulas kept at each step of the search.")] = 5,
    min_images: Annotated[int, typer.Option("--min-images", help="Concepts shown by fewer images are not "
                                                                 "searched.")] = MIN_IMAGES,
    null_draws: Annotated[int, typer.Option("--null-draws", help="Random orders of the images the p-values are "
                                                                 "measured against.")] = NULL_DRAWS,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the labels as JSON.",
                                                      show_default=False)] = None,
    weights: WeightsOption = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the null's random orders.")] = 0,
    quiet: QuietOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Label each unit of LAYER with the formula of dataset concepts (AND, OR, NOT) that best matches its activations over your images, found by beam search (after INVERT), scored by a metric that passes NeuronEval's sanity checks (AUPRC above chance by default), with a permutation p-value of the whole search corrected over the units, the share of the unit's top 20 images it covers, and the images that support and contradict it. With --check, score your own description the same way.

    Example: filterscope label efficientnet_lite0 -l _blocks.15 --dataset photos/ -u 0-15
    """
    for value, minimum, option in ((length, 1, "--length"), (beam, 1, "--beam"), (min_images, 1, "--min-images"),
                                   (null_draws, 1, "--null-draws")):
        at_least(value, minimum, option)
    metric(metric_name)  # an unknown name fails before any work
    if json_path is not None:
        check_output(json_path, folder=False)
    files = collect_images(dataset)
    if len(files) < 8:
        raise InvalidOptionError(f"--dataset gave {len(files)} images; labels need at least 8")
    loaded = load(model, weights, seed, device, quiet, None)
    wanted = parse_indices(units, "--units") if units else None
    with ProgressBars(quiet, {"labels": "unit"}) as progress:
        found = label_layer(loaded, layer, files, units=wanted, check=check, metric=metric_name, length=length,
                            beam=beam, min_images=min_images, null_draws=null_draws, seed=seed, progress=progress)
    typer.echo(f"{loaded.name} {layer}: {len(files)} images, concepts from {found[0].source if found else '-'}; "
               f"{metric_name} (chance 0), p-values " + ("uncorrected (a checked description)" if check else
                                                          f"of the search against {null_draws} random orders, "
                                                          "Benjamini-Hochberg over the units"))
    for label in found:
        typer.echo(describe(label, layer, files))
    if json_path is not None:
        typer.echo(f"wrote {atomic_write_text(json_path, json.dumps([x.to_dict() for x in found], indent=2))}")
    sys.stdout.flush()


def describe(label: UnitLabel, layer: str, files: list[Path]) -> str:
    """A label in two lines."""
    mark = "significant" if label.significant else "not significant"
    support = ", ".join(files[i].name for i in label.support[:3]) or "-"
    contradict = ", ".join(files[i].name for i in label.contradict[:3]) or "-"
    return (f"{layer} unit {label.unit}: {label.formula}  ({label.metric} {label.score:.2f}, p {label.p_value:.3f}, "
            f"q {label.q_value:.3f}: {mark}; covers {label.coverage:.0%} of its top 20)\n"
            f"  supports: {support}; contradicts: {contradict}")
