"""The ``concepts`` command: a sparse dictionary of a layer, trained on the user's images, measured on held-out ones
against the raw channels and a PCA (:mod:`filterscope.concepts`)."""

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer

from ..analysis import collect_images, prepare_image
from ..analysis.activations import checked_layer
from ..concepts import ConceptDictionary, train_dictionary
from ..concepts.figure import concept_figure
from ..concepts.sae import KINDS
from ..errors import InvalidOptionError
from ..files import atomic_write_text, check_output
from ..plots import save_figure
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
from .progress import ImageProgress, ProgressBars

MIN_IMAGES = 10


@app.command("concepts")
@guarded
def concepts_command(
    model: ModelArgument,
    layer: Annotated[str, typer.Option("--layer", "-l", help="The layer whose activation vectors are explained.")],
    dataset: Annotated[list[Path], typer.Option(
        "--dataset", help=f"Your images (files or folders; {MIN_IMAGES} at least, a few hundred diverse ones is "
                          "better): a fifth is held out for the numbers.")],
    atoms: Annotated[Optional[int], typer.Option("--atoms", help="Concepts in the dictionary (default 8 x the "
                                                                 "layer's channels).", show_default=False)] = None,
    k: Annotated[int, typer.Option("-k", help="Active concepts per activation vector (on average for batchtopk).")]
    = 32,
    kind: Annotated[str, typer.Option("--kind", help=f"The sparse autoencoder: {', '.join(KINDS)}.")] = "topk",
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training vectors (at least 600 steps of "
                                                         "1,024 vectors).")] = 5,
    views: Annotated[int, typer.Option("--views", help="Random views of each training image besides it and its "
                                                       "mirror image (resized crops, brightness).")] = 4,
    per_image: Annotated[Optional[int], typer.Option(
        "--per-image", help="Vectors per image, drawn by their norm (default: every position).",
        show_default=False)] = None,
    flips: Annotated[bool, typer.Option("--flips/--no-flips", help="Also train on the mirrored images.")] = True,
    stability: Annotated[bool, typer.Option("--stability", help="Also train with the next seed and match the two "
                                                                "dictionaries (twice the training time).")] = False,
    weights: WeightsOption = None,
    preprocessing: PreprocessingOption = None,
    out: OutOption = Path("out/concepts"),
    seed: Annotated[int, typer.Option("--seed", help="Seeds the held-out split, the vectors and the training.")] = 0,
    quiet: QuietOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Explain LAYER of MODEL by a sparse dictionary: train a TopK or BatchTopK sparse autoencoder on the layer's activation vectors over your images, and report on held-out images its fraction of variance explained (FVE), concepts per vector (L0), dead and dense concepts, and the model's top-1 agreement with the layer replaced by its reconstruction, next to the raw channels and a PCA at the same sparsity.

    Writes OUT/LAYER.concepts (the dictionary: filterscope.concepts.load_dictionary), OUT/concepts.json and OUT/concepts.png (the most used concepts, where each fires most).

    Example: filterscope concepts efficientnet_lite0 -l _blocks.15 --dataset photos/
    """
    for value, minimum, option in ((k, 1, "-k"), (epochs, 1, "--epochs"), (atoms, 2, "--atoms"),
                                   (per_image, 1, "--per-image"), (views, 0, "--views")):
        at_least(value, minimum, option)
    if kind not in KINDS:
        raise InvalidOptionError(f"--kind must be one of {', '.join(KINDS)} (got {kind!r})")
    check_output(out, folder=True)
    files = collect_images(dataset)
    if len(files) < MIN_IMAGES:
        raise InvalidOptionError(f"--dataset gave {len(files)} images; concepts need at least {MIN_IMAGES}")
    loaded = load(model, weights, seed, device, quiet, preprocessing)
    ref, channels = checked_layer(loaded, layer)
    if atoms is not None and k > atoms:
        raise InvalidOptionError(f"-k ({k}) must be at most --atoms ({atoms})")
    with ImageProgress("decoding", len(files), quiet) as bar:
        pixels = []
        for n, path in enumerate(files):
            pixels.append(prepare_image(loaded, path).pixels)
            bar(n + 1, len(files))
    with ProgressBars(quiet, {"training": "step"}) as progress:
        found = train_dictionary(loaded, ref, torch.stack(pixels), atoms=atoms, k=k, kind=kind, epochs=epochs,
                                 views=views, flips=flips, per_image=per_image, seed=seed,
                                 stability_seed=seed + 1 if stability else None, progress=progress)
    typer.echo(summary(found, channels))
    out.mkdir(parents=True, exist_ok=True)
    name = str(ref).replace("/", "_")
    typer.echo(f"wrote {found.save(out / f'{name}.concepts')}")
    typer.echo(f"wrote {atomic_write_text(out / 'concepts.json', json.dumps(found.to_dict(), indent=2))}")
    held = torch.stack([pixels[i] for i in found.held_out])
    typer.echo(f"wrote {save_figure(concept_figure(loaded, ref, found, held), out / 'concepts.png')}")
    sys.stdout.flush()


def summary(found: ConceptDictionary, channels: int) -> str:
    """The dictionary's numbers next to the baselines', as text."""
    s = found.settings
    lines = [f"{found.model} {found.layer}: {s.atoms} concepts ({s.atoms / channels:g} x {channels} channels, {s.kind} "
             f"k={s.k}) from {found.vectors:,} vectors in {found.seconds:.0f} s; on {len(found.held_out)} held-out "
             "images:",
             f"{'dictionary':<12}{'atoms':>7}{'FVE':>8}{'L0':>8}{'dead':>8}{'dense':>8}{'top-1':>8}{'KL':>9}"]
    for q in found.quality:
        top1 = f"{q.top1:.1%}" if q.top1 is not None else "-"
        kl = f"{q.kl:.4f}" if q.kl is not None else "-"
        lines.append(f"{q.name:<12}{q.atoms:>7}{q.fve:>8.3f}{q.l0:>8.1f}{q.dead:>8.1%}{q.dense:>8.1%}{top1:>8}{kl:>9}")
    if found.train_fve is not None:
        lines.append(f"(the dictionary's FVE on its training vectors: {found.train_fve:.3f})")
    if found.stability is not None:
        lines.append(f"stability against seed {s.seed + 1}: matched cosine {found.stability.mean_cosine:.3f} on "
                     f"average, {found.stability.above_09:.0%} of the concepts above 0.9")
    lines.append("(FVE: variance explained; L0: active per vector; dead: never fire; dense: on > 10% of positions; "
                 "top-1: the model's agreement with the layer replaced by its reconstruction)")
    return "\n".join(lines)
