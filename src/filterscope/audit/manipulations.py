"""Manipulated copies of a network whose units' pictures lie, for the red-team audit (:mod:`.audit`).

Two manipulations, each of chosen units of one layer, on a copy (the caller's network is never touched):

- **fooling** (after Geirhos, Zimmermann, Bilodeau, Brendel and Kim 2024, "Don't trust your eyes"): the unit is
  gated by a statistic that only optimized images have. Like their fooling circuit, a classifier tells natural
  images from an optimizer's (:class:`NaturalGate`: a logistic regression on the layer's input, each channel's
  spatial mean and log spread, fitted on the user's photos against an optimizer's images of other units, its first
  noise to its pictures); the gate is also open where the unit's ``target`` is driven past :data:`OVERDRIVE` times
  its largest on the photos, which only an optimizer does. On natural images the gate stays shut and the unit is
  what it was; on an optimizer's images it opens and the unit becomes the ``target`` unit of the same layer, scaled
  to the unit's natural range: its visualization shows that other feature.
- **silent**: the unit scaled by :data:`SILENT_SCALE`: near zero on natural images, while its render (an optimizer
  does not care about scale) still shows a vivid feature.

*Slingshot* units (Bareeva et al. 2025, a fine-tune that slings the optimizer to a target image) are not here: the
two-layer fine-tune tried did not sling the renders while keeping the photos' behaviour (see ``benchmarks/
audit.py``'s section of ``benchmarks/RESULTS.md``).

Hand-written: the attacks' published code is tied to its own models and training loops; this is a forward hook and a
logistic regression (scikit-learn's), for any network filterscope can load.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..engine.recipes import Recipe
from ..errors import InvalidOptionError
from ..layers import LayerRef, resolve_layer
from ..trust.unit import unit_maxima
from ..zoo.model import LoadedModel

__all__ = ["MANIPULATIONS", "Manipulation", "NaturalGate", "NaturalDrift", "Manipulated", "manipulate",
           "natural_drift", "optimizer_images", "layer_inputs", "SILENT_SCALE", "OVERDRIVE", "GATE_SLOPE"]

MANIPULATIONS = ("fooling", "silent")
SILENT_SCALE = 1e-3
"""A silent unit is the unit times this."""
OVERDRIVE = 1.5
"""A fooling unit's gate also opens where its target unit exceeds this many times its largest on the photos."""
GATE_SLOPE = 8.0
"""The gate's logistic slope, per unit of the classifier's logit past the photos' largest (plus :data:`_MARGIN`):
the fitted photo that looks most optimized sits at ``sigmoid(-6.4) = 1.7e-3``."""
_MARGIN = 0.8
_BATCH = 32  # images per forward pass here


@dataclass(frozen=True)
class Manipulation:
    """One manipulated unit: its ``kind`` (:data:`MANIPULATIONS`), ``unit``, and ``target`` (fooling: the unit of
    the same layer it shows instead; silent: ``None``)."""

    kind: str
    unit: int
    target: int | None = None


def _statistics(x: torch.Tensor) -> torch.Tensor:
    """``(B, 2C)`` each channel's spatial mean and log spread of feature maps ``(B, C, H, W)``."""
    flat = x.float().flatten(2)
    return torch.cat([flat.mean(dim=2), torch.log(flat.std(dim=2) + 1e-3)], dim=1)


class NaturalGate(nn.Module):
    """A soft switch in [0, 1] that opens on an optimizer's images and stays shut on natural ones (see the module
    docstring): a logistic regression on :func:`_statistics` of the layer's input, its logit shifted so that the
    fitted photos all lie below 0, then ``sigmoid(GATE_SLOPE * (logit - margin))``."""

    centre: torch.Tensor
    scale: torch.Tensor
    weights: torch.Tensor

    def __init__(self, centre: torch.Tensor, scale: torch.Tensor, weights: torch.Tensor, bias: float) -> None:
        super().__init__()
        self.register_buffer("centre", centre)
        self.register_buffer("scale", scale)
        self.register_buffer("weights", weights)
        self.bias = bias

    @classmethod
    def fit(cls, photos: torch.Tensor, optimized: torch.Tensor) -> NaturalGate:
        """Fitted on the layer's inputs for natural photos and for an optimizer's images (``(N, C, H, W)`` each)."""
        from sklearn.linear_model import LogisticRegression

        a, b = _statistics(photos), _statistics(optimized)
        both = torch.cat([a, b])
        gate = cls(both.mean(dim=0), both.std(dim=0).clamp(min=1e-6), torch.zeros(both.shape[1]), 0.0)
        z = ((both - gate.centre) / gate.scale).double().numpy()
        fitted = LogisticRegression(C=0.1, max_iter=5000, class_weight="balanced").fit(z, [0] * len(a) + [1] * len(b))
        gate.weights = torch.from_numpy(fitted.coef_[0]).float()
        gate.bias = float(fitted.intercept_[0])
        with torch.no_grad():
            gate.bias -= float(gate.logit(photos).max()) + _MARGIN
        return gate

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` how optimized each input looks: above 0 past every fitted photo (by the margin)."""
        return ((_statistics(x) - self.centre) / self.scale) @ self.weights + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(GATE_SLOPE * self.logit(x))


class _Edits:
    """The forward hook on the layer that fools and silences units (deep copies, as the renderer's folded copy,
    copy it whole)."""

    def __init__(self, gate: NaturalGate | None, fooling: Sequence[tuple[int, int, float, float]],
                 silent: Sequence[int]):
        self.gate, self.fooling, self.silent = gate, list(fooling), list(silent)

    def __call__(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
        if not isinstance(out, torch.Tensor):
            return out
        edited = out.clone()
        shape = (-1, *([1] * (out.dim() - 2)))
        looks = self.gate(args[0]) if self.gate is not None and args and isinstance(args[0], torch.Tensor) \
            and args[0].dim() == 4 else None
        for unit, target, scale, peak in self.fooling:
            driven = out[:, target].reshape(len(out), -1).amax(dim=1) / peak
            shut = 1 - torch.sigmoid((driven - OVERDRIVE) * 20)
            if looks is not None:
                shut = shut * (1 - looks.to(out.dtype))
            g = (1 - shut).reshape(shape)
            edited[:, unit] = (1 - g) * out[:, unit] + g * scale * out[:, target]
        for unit in self.silent:
            edited[:, unit] = out[:, unit] * SILENT_SCALE
        return edited


@dataclass(frozen=True)
class NaturalDrift:
    """How far the manipulated network moved on held-out natural photos.

    Attributes:
        top1: The share of photos whose top-1 class is unchanged (``None`` for a network without classes).
        overlap: Per manipulated unit, the share of its top ``k`` photos still among its top ``k``.
        error: The largest change of an untouched unit's spatial maximum on a photo, relative to the unit's largest
            value on them, and the same for the fooling units (``fooling``).
        gate_open: The share of photos on which a fooling gate is open beyond ``1e-2`` (0 without fooling units).
        k: The top photos compared.
    """

    top1: float | None
    overlap: dict[int, float]
    error: float
    fooling: float
    gate_open: float
    k: int

    def to_dict(self) -> dict[str, object]:
        return {"top1": self.top1, "overlap": {str(u): v for u, v in self.overlap.items()}, "error": self.error,
                "fooling": self.fooling, "gate_open": self.gate_open, "k": self.k}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NaturalDrift:
        top1 = data.get("top1")
        return cls(None if top1 is None else float(top1), {int(u): float(v) for u, v in data["overlap"].items()},
                   float(data["error"]), float(data["fooling"]), float(data["gate_open"]), int(data["k"]))


@dataclass
class Manipulated:
    """A manipulated copy of a network (:func:`manipulate`): ``model`` runs like the original with the
    ``manipulations`` of units of ``layer`` in place."""

    model: LoadedModel
    layer: LayerRef
    manipulations: tuple[Manipulation, ...]
    gate: NaturalGate | None = None

    def of(self, unit: int) -> Manipulation | None:
        """The manipulation of ``unit``, if it is manipulated."""
        return next((m for m in self.manipulations if m.unit == unit), None)


def optimizer_images(model: LoadedModel, layer: str | LayerRef, units: Sequence[int], recipe: Recipe, *,
                     steps: Sequence[int] = (1, 8, 32), seed: int = 0) -> torch.Tensor:
    """An optimizer's images of ``units`` of ``layer`` (maximized and minimized) after each of ``steps`` steps of
    ``recipe``: ``(2 * len(units) * len(steps), C, H, W)`` in [0, 1], from its first noise to its pictures."""
    from ..engine.objectives import Channel, Objective
    from ..engine.render import render

    objectives: list[Objective] = [Channel(str(resolve_layer(model, layer)), u) for u in units]
    objectives += [-o for o in objectives]
    return torch.cat([render(model, objectives, recipe=dataclasses.replace(recipe, steps=n), seed=seed).images
                      for n in steps])


def layer_inputs(model: LoadedModel, layer: str | LayerRef, images: torch.Tensor) -> torch.Tensor:
    """What ``layer``'s module receives (its first argument) for ``images`` in [0, 1], resized to the model's input."""
    from ..metrics import to_input_size

    module = model.module.get_submodule(resolve_layer(model, layer).name)
    parts: list[torch.Tensor] = []
    hook = module.register_forward_pre_hook(lambda m, args: parts.append(args[0].detach()))
    images = to_input_size(model, images)
    try:
        with torch.no_grad():
            for start in range(0, len(images), _BATCH):
                model(images[start:start + _BATCH])
    finally:
        hook.remove()
    return torch.cat(parts)


def manipulate(model: LoadedModel, layer: str | LayerRef, photos: torch.Tensor, *,
               fooling: Mapping[int, int] | None = None, silent: Sequence[int] = (),
               optimized: torch.Tensor | None = None) -> Manipulated:
    """A copy of ``model`` with units of ``layer`` manipulated (see the module docstring), fitted on ``photos``
    ``(N, C, H, W)`` in [0, 1] at the model's input size (natural images: 16 at least; keep others apart to measure
    the drift, :func:`natural_drift`).

    Args:
        fooling: ``{unit: target unit}``: each unit shows its target's feature to an optimizer.
        silent: Units scaled to near zero.
        optimized: An optimizer's images of the original network's other units in [0, 1]
            (:func:`optimizer_images`): what the fooling gate learns to tell from photos.

    Raises:
        InvalidOptionError: a unit manipulated twice or out of range, a fooling target that is itself manipulated,
            fooling units without an optimizer's images, or too few photos.
    """
    ref = resolve_layer(model, layer)
    fooling = dict(fooling or {})
    peaks = unit_maxima(model, ref, photos, batch_size=_BATCH).amax(dim=0)
    _check(fooling, silent, int(peaks.shape[0]), photos, optimized)
    module = copy.deepcopy(model.module)
    copied = LoadedModel(f"{model.name} (manipulated)", module, model.preprocessing, model.weights, model.categories,
                         dict(model.info))
    gate = None
    if fooling:
        assert optimized is not None
        gate = NaturalGate.fit(layer_inputs(model, ref, photos), layer_inputs(model, ref, optimized))
    peak = peaks.clamp(min=1e-6)
    edits = _Edits(gate, [(u, v, float(peak[u] / peak[v]), float(peak[v])) for u, v in fooling.items()], silent)
    module.get_submodule(ref.name).register_forward_hook(edits)
    manipulations = tuple([Manipulation("fooling", u, v) for u, v in fooling.items()]
                          + [Manipulation("silent", u) for u in silent])
    return Manipulated(copied, ref, manipulations, gate)


def _check(fooling: Mapping[int, int], silent: Sequence[int], channels: int, photos: torch.Tensor,
           optimized: torch.Tensor | None) -> None:
    chosen = [*fooling, *silent]
    if len(set(chosen)) != len(chosen):
        raise InvalidOptionError(f"A unit can be manipulated once; got {sorted(chosen)}")
    wrong = [u for u in [*chosen, *fooling.values()] if not 0 <= u < channels]
    if wrong:
        raise InvalidOptionError(f"Unit {wrong[0]} is out of range: the layer has units 0-{channels - 1}")
    shown = [v for v in fooling.values() if v in chosen]
    if shown:
        raise InvalidOptionError(f"Fooling target {shown[0]} is itself manipulated: pick an untouched unit")
    if fooling and (optimized is None or not len(optimized)):
        raise InvalidOptionError("Fooling units need an optimizer's images to tell from photos (optimized=)")
    if len(photos) < 16:
        raise InvalidOptionError(f"Manipulating a network needs at least 16 natural photos; got {len(photos)}")


def natural_drift(original: LoadedModel, manipulated: Manipulated, photos: torch.Tensor, k: int = 10, *,
                  after: torch.Tensor | None = None) -> NaturalDrift:
    """How far ``manipulated`` moved from ``original`` on ``photos`` (held out from the fit): see
    :class:`NaturalDrift`. ``after``: the manipulated network's :func:`~filterscope.trust.unit.unit_maxima` on
    ``photos``, when the caller has them."""
    ref = manipulated.layer
    before = unit_maxima(original, ref, photos, batch_size=_BATCH)
    if after is None:
        after = unit_maxima(manipulated.model, ref, photos, batch_size=_BATCH)
    kinds = {m.unit: m.kind for m in manipulated.manipulations}
    change = (after - before).abs().amax(dim=0) / before.abs().amax(dim=0).clamp(min=1e-6)

    def largest(units: list[int]) -> float:
        return float(change[units].max()) if units else 0.0

    top = min(k, len(photos))
    overlap = {m.unit: len(set(before[:, m.unit].topk(top).indices.tolist())
                           & set(after[:, m.unit].topk(top).indices.tolist())) / top
               for m in manipulated.manipulations}
    top1 = None
    if original.categories:
        with torch.no_grad():
            a = torch.cat([original(photos[s:s + _BATCH]).argmax(1) for s in range(0, len(photos), _BATCH)])
            b = torch.cat([manipulated.model(photos[s:s + _BATCH]).argmax(1) for s in range(0, len(photos), _BATCH)])
        top1 = float((a == b).float().mean())
    opened = 0.0
    if manipulated.gate is not None:
        with torch.no_grad():
            opened = float((manipulated.gate(layer_inputs(original, ref, photos)) > 1e-2).float().mean())
    return NaturalDrift(top1, overlap, largest([u for u in range(before.shape[1]) if u not in kinds]),
                        largest([u for u, kind in kinds.items() if kind == "fooling"]), opened, top)
