"""Quality scores of a visualization: numbers where the paper had to judge by eye.

For a visualization of a unit (an objective), with the image resized to the model's input size:

1. **activation ratio**: the objective on the visualization divided by its maximum over a reference
   set of natural images (by default the photos shipped with scikit-image, each seen whole and in random
   crops). Above 1: the visualization drives the unit harder than any reference photo.
2. **robustness**: the same ratio averaged over random small translations (±8 %), rotations (±10°)
   and rescalings (0.9–1.1). An adversarial-looking pattern collapses here; a real feature does not.
3. **high-frequency share**: the share of the image's spectral power (mean removed, all channels)
   at frequencies above half the Nyquist frequency, ``max(|fx|, |fy|) > 1/4`` cycles per pixel. A flat
   image has 0, white noise about 3/4.
4. **transfer** (class objectives): the top-1 class another network assigns to the visualization.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from .arguments import checked
from .engine.objective_syntax import ObjectiveLike, as_objective, as_objectives
from .engine.objectives import ClassLogit, Objective, layers_of, objective_values
from .engine.transforms import random_affine
from .errors import InvalidObjectiveError, InvalidOptionError
from .runtime.core import ANALYSIS_BATCH, Forward, Runtime
from .zoo.calibration import photo_views
from .zoo.model import LoadedModel, coerce_model

__all__ = ["reference_crops", "high_frequency_share", "to_input_size", "measure", "reference_max",
           "activation_ratio", "robustness", "transfer", "Quality", "score"]


@checked
def measure(model: LoadedModel | torch.nn.Module, objectives: ObjectiveLike | Sequence[ObjectiveLike],
            images: torch.Tensor, *, batch_size: int = ANALYSIS_BATCH, runtime: Runtime | None = None) -> torch.Tensor:
    """``(B,)``: each objective (resolved against ``model``) on its image of ``(B,C,H,W)`` in [0, 1],
    without gradients, through the same :class:`~filterscope.runtime.Forward` as rendering.

    A single objective is applied to every image.

    Raises:
        InvalidObjectiveError: neither one objective nor one per image.
    """
    model = coerce_model(model)
    wanted = as_objectives(objectives)
    if len(wanted) == 1 and images.shape[0] > 1:
        wanted = wanted * images.shape[0]
    if len(wanted) != images.shape[0]:
        raise InvalidObjectiveError(f"measure() needs one objective per image, or one for all: got "
                                    f"{len(wanted)} objectives for {images.shape[0]} images")
    resolved = [o.resolve(model) for o in wanted]
    layers = layers_of(resolved)
    out = []
    with torch.no_grad(), Forward(model, layers, runtime) as forward:
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size].to(model.device)
            activations = forward(model.preprocessing.normalize(batch))
            out.append(objective_values(resolved[start:start + batch_size], activations).float().cpu())
    return torch.cat(out)


@checked
def reference_crops(model: LoadedModel, images: Image.Image | Sequence[Image.Image] | None = None, *,
                    crops_per_image: int = 8, seed: int = 0) -> torch.Tensor:
    """Each image in the model's view plus ``crops_per_image`` random crops (30–100 % of the image, with
    the input's aspect ratio), resized to the input: ``(N,C,H,W)`` in [0, 1].

    The default images are scikit-image's photos, in the model's mode (RGB, or grayscale for a
    1-channel model). They suit ImageNet-like models; pass your domain's images otherwise. A model with
    another number of channels has no photos to compare with: give ``score`` a ``reference`` tensor.

    Raises:
        InvalidOptionError: the model's inputs are not photos (neither 1 nor 3 channels).
    """
    model = coerce_model(model)
    if model.preprocessing.image_mode is None:
        raise InvalidOptionError(f"{model.name} takes {model.preprocessing.channels} channels: there are no reference "
                                 "photos for it; pass reference= a (N,C,H,W) tensor of your own data")
    if isinstance(images, Image.Image):
        images = [images]
    return photo_views(model.preprocessing, images, crops_per_image=crops_per_image, seed=seed)


def high_frequency_share(images: torch.Tensor) -> torch.Tensor:
    """``(B,)``: share of spectral power above half Nyquist (``max(|fx|,|fy|) > 1/4``), mean removed."""
    if images.dim() == 3:
        images = images[None]
    images = images.double()
    centred = images - images.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(centred).abs() ** 2
    fy = torch.fft.fftfreq(images.shape[-2], dtype=torch.float64).abs()
    fx = torch.fft.fftfreq(images.shape[-1], dtype=torch.float64).abs()
    high = torch.maximum(fy[:, None], fx[None, :]) > 0.25
    total = power.sum(dim=(1, 2, 3))
    share = (power * high).sum(dim=(1, 2, 3)) / total.clamp(min=1e-30)
    return torch.where(total > 1e-20, share, torch.zeros_like(share)).float()


def to_input_size(model: LoadedModel, images: torch.Tensor) -> torch.Tensor:
    """``(B,C,H,W)`` resized (antialiased) to the model's input shape."""
    shape = model.preprocessing.input_shape
    if tuple(images.shape[-2:]) == shape:
        return images
    return F.interpolate(images, size=shape, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def reference_max(model: LoadedModel, objective: Objective, crops: torch.Tensor) -> float:
    """The objective's largest value over the reference ``crops`` (at least a tiny positive number)."""
    return max(float(measure(model, [objective], crops).max()), 1e-6)


def activation_ratio(model: LoadedModel, objective: Objective, images: torch.Tensor, reference: float) -> torch.Tensor:
    """``(B,)``: the objective on each image (at the input size) over ``reference``."""
    return measure(model, [objective], to_input_size(model, images)) / reference


def robustness(model: LoadedModel, objective: Objective, images: torch.Tensor, reference: float, *, samples: int = 16,
               seed: int = 0, shift: float = 0.08, degrees: float = 10.0, scale: tuple[float, float] = (0.9, 1.1),
               ) -> torch.Tensor:
    """``(B,)``: the activation ratio averaged over ``samples`` random small affine transforms of each image."""
    generator = torch.Generator().manual_seed(seed)
    base = to_input_size(model, images)
    totals = torch.zeros(base.shape[0])
    for _ in range(samples):
        count = base.shape[0]
        shifts = (torch.rand(count, 2, generator=generator) * 2 - 1) * shift * 2
        angles = (torch.rand(count, generator=generator) * 2 - 1) * degrees
        scales = scale[0] + torch.rand(count, generator=generator) * (scale[1] - scale[0])
        moved = random_affine(base, shifts, scales, angles, padding_mode="reflection")
        totals += measure(model, [objective], moved) / reference
    return totals / samples


def transfer(other: LoadedModel, images: torch.Tensor) -> list[tuple[int, float]]:
    """Top-1 class and its probability that ``other`` assigns to each image."""
    with torch.no_grad():
        probabilities = other(to_input_size(other, images).to(other.device)).softmax(dim=1).cpu()
    values, indices = probabilities.max(dim=1)
    return [(int(i), float(v)) for i, v in zip(indices, values)]


@dataclass(frozen=True)
class Quality:
    """The scores of one visualization (see the module docstring)."""

    objective: str
    activation_ratio: float
    robustness: float
    high_frequency_share: float
    transfer_class: int | None = None
    transfer_label: str | None = None
    transfer_probability: float | None = None



@checked
def score(model: LoadedModel | torch.nn.Module, objective: ObjectiveLike, images: torch.Tensor, *,
          reference: torch.Tensor | None = None, transfer_model: LoadedModel | None = None, samples: int = 16,
          seed: int = 0) -> list[Quality]:
    """All scores for visualizations ``(B,C,H,W)`` of one ``objective``.

    Args:
        model: The model the visualizations were made for.
        objective: The unit they visualize.
        images: The visualizations, in [0, 1], any square size.
        reference: Reference crops from :func:`reference_crops` (computed when not given; pass them to
            score many visualizations against the same set).
        transfer_model: For class objectives, the network whose top-1 class is reported.
        samples: Random transforms for :func:`robustness`.
        seed: Seeds the reference crops and the transforms.

    The reference set decides what "1.0" means: the default is scikit-image's photos, which suit
    ImageNet-like models; for another domain (medical scans, satellite tiles, spectrograms) pass
    ``reference=reference_crops(model, [your images...])``, or ``--reference DIR`` on the command line.
    """
    model = coerce_model(model)
    objective = as_objective(objective).resolve(model)
    crops = reference if reference is not None else reference_crops(model, seed=seed)
    ref = reference_max(model, objective, crops)
    ratios = activation_ratio(model, objective, images, ref)
    robust = robustness(model, objective, images, ref, samples=samples, seed=seed)
    hf = high_frequency_share(images)
    transfers: list[tuple[int, float] | None] = [None] * images.shape[0]
    if transfer_model is not None and isinstance(objective, ClassLogit):
        transfers = list(transfer(transfer_model, images))
    out = []
    for i in range(images.shape[0]):
        t = transfers[i]
        label = transfer_model.categories[t[0]] if t and transfer_model and transfer_model.categories else None
        out.append(Quality(objective.description, float(ratios[i]), float(robust[i]), float(hf[i]),
                           t[0] if t else None, label, t[1] if t else None))
    return out
