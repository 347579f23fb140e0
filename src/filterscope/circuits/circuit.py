"""One unit's circuit: what builds it from the layer before, what it feeds, which classes it pushes, and
whether those weights explain it.

:func:`circuit` gathers, for ``unit`` of ``layer`` (B) and an earlier ``source`` layer (A):

* the inputs that excite and inhibit it most by :func:`~.weights.expanded_weights` (with their kernels),
* the inputs that drive it on its top exemplars by :func:`~.evidence.attribution`, each with both numbers,
  and a note when the two views disagree (their top-k overlap below half: where non-linearities matter, the
  weights alone mislead),
* the units of a later layer it excites and inhibits (``to``), the classes it promotes and suppresses
  (:mod:`.classes`, when the model's output has class names or at least is a vector),
* the causal check (:func:`~.evidence.ablation_check`) of the top inputs of both views against random ones.

The exemplars are the ``exemplars`` images that drive the unit most among ``images`` (default:
scikit-image's photos and random crops of them, :func:`~filterscope.metrics.reference_crops`); an atlas
gives its own (the CLI's ``--atlas``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from ..analysis.inputs import Images, image_list, prepare_image
from ..arguments import checked
from ..errors import ChannelError, FilterscopeError
from ..layers import Capture, LayerRef, check_channel, layer_info, resolve_layer
from ..metrics import reference_crops
from ..runtime.core import ANALYSIS_BATCH
from ..zoo.model import LoadedModel, coerce_model, frozen
from .classes import class_effects
from .evidence import DRAWS, AblationCheck, ablation_check, attribution
from .weights import Connection, ExpandedWeights, expanded_weights

__all__ = ["Circuit", "circuit", "exemplar_pixels", "top_exemplars", "agreement", "has_vector_output", "ImageInput"]

ImageInput = torch.Tensor | Images | None


@dataclass(frozen=True)
class Circuit:
    """The circuit of ``unit`` of ``layer`` from ``source`` (see the module docstring).

    Attributes:
        excite, inhibit: Top inputs by expanded weight (kernel and attribution filled in).
        attributed: Top inputs by attribution on the exemplars (weight and kernel filled in).
        agreement: The fraction of the top-k by expanded weight also in the top-k by attribution.
        outputs_to: The later layer of ``outputs`` (``None`` when not asked).
        outputs: Units of ``outputs_to`` this unit excites most, and inhibits most.
        promoted, suppressed: Classes by linearized direct effect (empty when not computed).
        ablation: The causal check (``None`` without exemplars).
        exemplars: How many images the attribution and the check used.
        kernel_size: ``(kh, kw)`` of the expanded weights.
    """

    model: str
    layer: LayerRef
    unit: int
    source: LayerRef
    excite: list[Connection]
    inhibit: list[Connection]
    attributed: list[Connection]
    agreement: float
    outputs_to: LayerRef | None
    outputs: tuple[list[Connection], list[Connection]]
    promoted: list[Connection]
    suppressed: list[Connection]
    ablation: AblationCheck | None
    exemplars: int
    kernel_size: tuple[int, int]

    @property
    def note(self) -> str | None:
        """A warning when the two views of the inputs disagree."""
        if self.agreement >= 0.5 or not self.attributed:
            return None
        return (f"the views disagree: only {self.agreement:.0%} of the top inputs by expanded weight are among the "
                "top inputs by attribution (non-linearities matter here; trust the attribution and the ablation)")

    def to_dict(self) -> dict[str, object]:
        rows = lambda items: [c.to_dict() for c in items]  # noqa: E731
        return {"model": self.model, "layer": str(self.layer), "unit": self.unit, "source": str(self.source),
                "kernel_size": list(self.kernel_size), "exemplars": self.exemplars,
                "inputs": {"excite": rows(self.excite), "inhibit": rows(self.inhibit),
                           "attribution": rows(self.attributed)},
                "agreement": self.agreement, "note": self.note,
                "outputs": None if self.outputs_to is None else {
                    "layer": str(self.outputs_to), "excite": rows(self.outputs[0]), "inhibit": rows(self.outputs[1])},
                "classes": {"promoted": rows(self.promoted), "suppressed": rows(self.suppressed)},
                "ablation": self.ablation.to_dict() if self.ablation is not None else None}


def agreement(by_weight: Sequence[Connection], by_attribution: Sequence[Connection]) -> float:
    """The fraction of ``by_weight``'s units also in ``by_attribution`` (1.0 when ``by_weight`` is empty)."""
    if not by_weight:
        return 1.0
    return len({c.unit for c in by_weight} & {c.unit for c in by_attribution}) / len(by_weight)


def top_exemplars(model: LoadedModel, target: LayerRef, pixels: torch.Tensor, units: Sequence[int], count: int
                  ) -> dict[int, tuple[list[int], list[tuple[int, int]]]]:
    """For each unit, the indices of the ``count`` images of ``pixels`` it peaks highest on and where it peaks
    (one pass over the images for all units)."""
    best: list[torch.Tensor] = []
    where: list[torch.Tensor] = []
    chosen = torch.tensor(list(units))
    with frozen(model.module), torch.no_grad(), Capture(model, [target]) as capture:
        for start in range(0, len(pixels), ANALYSIS_BATCH):
            b = capture(model.preprocessing.normalize(pixels[start:start + ANALYSIS_BATCH].to(model.device)))[target]
            maps = b.float().flatten(2)[:, chosen.to(b.device)] if b.dim() == 4 else b.float()[:, chosen, None]
            value, index = maps.max(dim=2)
            best.append(value.cpu())
            where.append(index.cpu())
    values, flat = torch.cat(best), torch.cat(where)  # (N, units)
    shape = layer_info(model, target).shape
    width = shape[-1] if len(shape) == 3 else 1
    out = {}
    for j, unit in enumerate(units):
        order = torch.argsort(values[:, j], descending=True, stable=True)[:count].tolist()
        out[unit] = (order, [divmod(int(flat[i, j]), width) for i in order])
    return out


def exemplar_pixels(model: LoadedModel, target: LayerRef, unit: int, images: ImageInput, count: int,
                    fit: str = "crop") -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The ``count`` images among ``images`` where ``unit`` peaks highest, and where it peaks in each."""
    if images is None:
        pixels = reference_crops(model)
    elif isinstance(images, torch.Tensor):
        pixels = images
    else:
        pixels = torch.stack([prepare_image(model, image, fit=fit).pixels for image in image_list(images)])
    if not len(pixels):
        raise FilterscopeError("No images to find the unit's exemplars in")
    order, positions = top_exemplars(model, target, pixels, [unit], count)[unit]
    return pixels[order], positions


@checked
def circuit(model: LoadedModel | torch.nn.Module, layer: str | LayerRef, unit: int, source: str | LayerRef, *,
            k: int = 8, to: str | LayerRef | None = None, images: ImageInput = None, exemplars: int = 8,
            classes: bool = True, ablate: int = 5, draws: int = DRAWS, seed: int = 0, fit: str = "crop",
            weights: ExpandedWeights | None = None, positions: Sequence[tuple[int, int]] | None = None) -> Circuit:
    """The circuit of ``unit`` of ``layer`` built from the earlier layer ``source`` (module docstring).

    Args:
        model: The model.
        layer: The unit's layer (B).
        unit: The unit.
        source: An earlier layer (A) whose units build it.
        k: How many inputs (and outputs, and classes) of each sign to list.
        to: A later layer whose units this one feeds (``None``: no outputs).
        images: Where to find the unit's exemplars: paths, PIL images or a (N,C,H,W) tensor in [0,1] in the
            model's view (default: scikit-image's photos and crops of them).
        exemplars: How many of the images (those the unit peaks highest on) to use; 0: no attribution, no check.
        classes: Also the classes the unit promotes and suppresses.
        ablate: How many top inputs the causal check zeroes (0: no check).
        draws: How many random input sets it compares with.
        seed: Seed of the random sets.
        fit: How images meet the input (``crop``, ``squash``, ``pad``).
        weights: The expanded weights from ``source`` to ``layer``, when already computed (a whole layer's).
        positions: With ``images`` a tensor of the unit's exemplars already chosen: where the unit peaks in each
            (``(y, x)`` in ``layer``'s grid); they are used as they are (no search).
    """
    loaded = coerce_model(model)
    b_ref, a_ref = resolve_layer(loaded, layer), resolve_layer(loaded, source)
    check_channel(loaded, b_ref, unit)
    if k < 1:
        raise ChannelError(f"k must be at least 1 (got {k})")
    found = weights if weights is not None else expanded_weights(loaded, a_ref, b_ref)
    excite, inhibit = found.inputs(unit, k)
    attributed: list[Connection] = []
    check, used = None, 0
    if exemplars > 0:
        if isinstance(images, torch.Tensor) and positions is not None:
            pixels, positions = images[:exemplars], list(positions)[:exemplars]
        else:
            pixels, positions = exemplar_pixels(loaded, b_ref, unit, images, exemplars, fit)
        used = len(pixels)
        scores = attribution(loaded, a_ref, b_ref, unit, pixels, positions)
        excite = [replace(c, attribution=float(scores[c.unit])) for c in excite]
        inhibit = [replace(c, attribution=float(scores[c.unit])) for c in inhibit]
        top = [i for i in torch.argsort(scores, descending=True, stable=True)[:k].tolist() if scores[i] > 0]
        attributed = [Connection(i, float(found.totals[unit, i]), found.weights[unit, i].numpy().copy(),
                                 float(scores[i])) for i in top]
        if ablate > 0:
            views = {"expanded": [c.unit for c in excite[:ablate]], "attribution": top[:ablate]}
            check = ablation_check(loaded, a_ref, b_ref, unit, pixels, views, channels=found.weights.shape[1],
                                   draws=draws, seed=seed, positions=positions)
    outputs: tuple[list[Connection], list[Connection]] = ([], [])
    c_ref = resolve_layer(loaded, to) if to is not None else None
    if c_ref is not None:
        outputs = expanded_weights(loaded, b_ref, c_ref).outputs(unit, k)
    promoted: list[Connection] = []
    suppressed: list[Connection] = []
    if classes and has_vector_output(loaded):
        promoted, suppressed = class_effects(loaded, b_ref, [unit]).top(unit, k)
    return Circuit(loaded.name, b_ref, unit, a_ref, excite, inhibit, attributed, agreement(excite, attributed),
                   c_ref, outputs, promoted, suppressed, check, used, found.kernel_size)


def has_vector_output(model: LoadedModel) -> bool:
    """Whether the model's output is one vector per sample (logits), as the class effects need."""
    try:
        return len(layer_info(model, "").shape) == 1
    except FilterscopeError:
        return False
