"""The ``evaluate`` command: quality scores of visualization PNGs (model and objective read from their
metadata)."""

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer

from ..analysis import collect_images
from ..engine.objective_syntax import parse_objective
from ..engine.objectives import ClassLogit
from ..errors import InvalidObjectiveError
from ..files import atomic_write_text, check_output
from ..images import load_array, load_image, read_png_metadata
from ..metrics import reference_crops, score
from ..tensors import to_tensor
from ..zoo import Preprocessing, WeightsSource, load_model, read_preprocessing, reload_model
from .app import app, guarded
from .options import DeviceOption, PreprocessingOption, WeightsOption, at_least, load


@app.command("evaluate")
@guarded
def evaluate_command(
    images: Annotated[list[Path], typer.Argument(help="Visualization PNGs (or folders of them).", show_default=False)],
    objective: Annotated[Optional[str], typer.Option(
        "--objective", "-O", help="The unit the images show; default: read from each PNG's metadata.")] = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Default: read from each PNG's metadata, else efficientnet_lite0.")] = None,
    weights: WeightsOption = None,
    preprocessing: PreprocessingOption = None,
    reference: Annotated[Optional[Path], typer.Option(
        "--reference", help="Folder of natural images to compare with (default: scikit-image's photos).")] = None,
    transfer_model: Annotated[str, typer.Option(
        "--transfer-model", help="For class objectives: the network whose top-1 class is reported.")] = "efficientnet_lite2",
    samples: Annotated[int, typer.Option("--samples", help="Random transforms for the robustness score.")] = 16,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the scores as JSON.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the robustness score's transforms; with --weights "
                                                   "random, also of the weights (otherwise the weights are those "
                                                   "each PNG recorded).")] = 0,
    device: DeviceOption = "auto",
) -> None:
    """Score visualizations: activation ratio vs natural images, robustness to small transforms, high-frequency share, and (class objectives) transfer to another network."""
    at_least(samples, 1, "--samples")
    if json_path is not None:
        check_output(json_path, folder=False)
    files = collect_images(images)
    jobs = []
    for path in files:
        meta = read_png_metadata(path) if path.suffix.lower() == ".png" else {}
        text = objective or meta.get("objective")
        if not text:
            raise InvalidObjectiveError(f"{path} carries no objective in its metadata: pass --objective")
        name = model or meta.get("model_source") or meta.get("model") or "efficientnet_lite0"
        if weights is not None or model is not None:  # the options say which network: load it as they say
            recorded = None
        else:  # the network that made the image, as its PNG recorded it (random weights with their seed, a file)
            recorded = WeightsSource.recorded(meta.get("weights_source"), meta.get("weights", "")) if meta else None
        recorded_prep = None if model or preprocessing or "preprocessing" not in meta else meta["preprocessing"]
        jobs.append((path, parse_objective(text), name, recorded, recorded_prep))
    models, transfer_loaded, rows = {}, None, []
    refs = [load_image(p) for p in collect_images([reference])] if reference is not None else None
    for path, obj, name, recorded, recorded_prep in jobs:
        key = (name, recorded, recorded_prep)
        if key not in models:
            prep = (Preprocessing.from_dict(json.loads(recorded_prep)) if recorded_prep is not None  # as it was made
                    else read_preprocessing(preprocessing) if preprocessing is not None else None)
            loaded = (reload_model(name, recorded, preprocessing=prep, device=device) if recorded is not None
                      else load_model(name, weights, seed=seed, device=device, preprocessing=prep))
            models[key] = (loaded, reference_crops(loaded, refs, seed=seed))
        loaded, crops = models[key]
        if isinstance(obj, ClassLogit) and transfer_loaded is None:
            transfer_loaded = load(transfer_model, None, seed, device, True)
        if path.suffix.lower() == ".png" and "array" in read_png_metadata(path):
            # a multispectral render: the PNG is a preview; the optimized image is the array beside it
            array = load_array(path.parent / read_png_metadata(path)["array"], loaded.preprocessing.channels)
            pixels = torch.from_numpy(array)[None]
        else:
            pixels = to_tensor(load_image(path), loaded.preprocessing.image_mode or "RGB")
        quality = score(loaded, obj, pixels, reference=crops, samples=samples, seed=seed,
                        transfer_model=transfer_loaded if isinstance(obj, ClassLogit) else None)[0]
        rows.append({"file": str(path), "model": name, "weights": str(loaded.weights), **dataclasses.asdict(quality)})
    header = f"{'file':<40} {'objective':<36} {'act. ratio':>10} {'robustness':>10} {'HF share':>8}  transfer"
    typer.echo(header)
    for row in rows:
        transfer = f"{row['transfer_class']} {row['transfer_label']} ({row['transfer_probability']:.2f})" \
            if row["transfer_class"] is not None else ""
        typer.echo(f"{Path(row['file']).name[:40]:<40} {row['objective'][:36]:<36} {row['activation_ratio']:>10.3f} "
                   f"{row['robustness']:>10.3f} {row['high_frequency_share']:>8.3f}  {transfer}")
    if json_path is not None:
        typer.echo(f"wrote {atomic_write_text(json_path, json.dumps(rows, indent=2))}")
