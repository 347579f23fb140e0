"""Objectives: what the optimization maximizes.

An objective is a small object with

* ``layers``: the layers whose activations it reads (names as the user wrote them until
  :meth:`Objective.resolve` turns them into checked :class:`~filterscope.layers.LayerRef` s), and
* ``__call__(activations) -> (B,)``: one value per batch element, computed from
  ``{LayerRef: (B, C, ...)}``, to be **maximized** (the render loop negates it once).

One value per element is what lets one forward pass optimize many filters at once. Objectives combine
with ``+``, ``-``, unary ``-`` and ``*`` (by a number or another objective), and carry a readable
``description`` such as ``channel(layer4.2.relu, 484) - 0.5*channel(layer4.2.relu, 257)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .errors import ChannelError, InvalidObjectiveError
from .layers import OUTPUT, LayerRef, check_channel, layer_info, resolve_layer
from .zoo.registry import LoadedModel

__all__ = ["Objective", "Channel", "Neuron", "ClassLogit", "channel", "neuron", "class_logit"]

Activations = Mapping[LayerRef, torch.Tensor]


class Objective:
    """Base class: a function of layer activations, one value per batch element, to maximize."""

    @property
    def layers(self) -> tuple[LayerRef | str, ...]:
        raise NotImplementedError

    @property
    def description(self) -> str:
        raise NotImplementedError

    def resolve(self, model: LoadedModel) -> Objective:
        """A copy with every layer resolved and checked against ``model`` (channels in range)."""
        raise NotImplementedError

    def __call__(self, activations: Activations) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Objective {self.description}>"

    def __str__(self) -> str:
        return self.description

    # Arithmetic builds new objectives; numbers are treated as constants.
    def __add__(self, other: Objective | float) -> Objective:
        return _Combine("+", self, _as_objective(other))

    def __radd__(self, other: float) -> Objective:
        return _Combine("+", _as_objective(other), self)

    def __sub__(self, other: Objective | float) -> Objective:
        return _Combine("-", self, _as_objective(other))

    def __rsub__(self, other: float) -> Objective:
        return _Combine("-", _as_objective(other), self)

    def __mul__(self, other: Objective | float) -> Objective:
        return _Combine("*", self, _as_objective(other))

    def __rmul__(self, other: float) -> Objective:
        return _Combine("*", _as_objective(other), self)

    def __neg__(self) -> Objective:
        return _Combine("*", _Constant(-1.0), self)


def _as_objective(value: Objective | float) -> Objective:
    if isinstance(value, Objective):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _Constant(float(value))
    raise TypeError(f"cannot combine an objective with {type(value).__name__}")


def _spatial_mean(act: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` → ``(B,)`` mean over every dimension but the batch."""
    return act.reshape(act.shape[0], -1).mean(dim=1)


@dataclass(frozen=True, repr=False)
class _Constant(Objective):
    value: float

    @property
    def layers(self) -> tuple[LayerRef | str, ...]:
        return ()

    @property
    def description(self) -> str:
        return f"{self.value:g}"

    def resolve(self, model: LoadedModel) -> Objective:
        return self

    def __call__(self, activations: Activations) -> torch.Tensor:
        # Broadcasts against (B,) values of the other operand.
        return torch.tensor(self.value)


@dataclass(frozen=True, repr=False)
class _Combine(Objective):
    op: str
    left: Objective
    right: Objective

    @property
    def layers(self) -> tuple[LayerRef | str, ...]:
        return tuple(dict.fromkeys(self.left.layers + self.right.layers))

    @property
    def description(self) -> str:
        def wrap(obj: Objective) -> str:
            # Parenthesize sums inside products and on the right of a minus.
            if isinstance(obj, _Combine) and obj.op in "+-" and (self.op == "*" or obj is self.right):
                return f"({obj.description})"
            return obj.description

        sep = "*" if self.op == "*" else f" {self.op} "
        return f"{wrap(self.left)}{sep}{wrap(self.right)}"

    def resolve(self, model: LoadedModel) -> Objective:
        return _Combine(self.op, self.left.resolve(model), self.right.resolve(model))

    def __call__(self, activations: Activations) -> torch.Tensor:
        a, b = self.left(activations), self.right(activations)
        if self.op == "+":
            return a + b
        if self.op == "-":
            return a - b
        return a * b


@dataclass(frozen=True, repr=False)
class Channel(Objective):
    """Mean activation of one channel (filter) over its spatial map: the paper's objective."""

    layer: LayerRef | str
    channel: int

    @property
    def layers(self) -> tuple[LayerRef | str, ...]:
        return (self.layer,)

    @property
    def description(self) -> str:
        return f"channel({self.layer}, {self.channel})"

    def resolve(self, model: LoadedModel) -> Channel:
        ref = resolve_layer(model, self.layer)
        check_channel(model, ref, self.channel)
        return Channel(ref, self.channel)

    def __call__(self, activations: Activations) -> torch.Tensor:
        return _spatial_mean(activations[self.layer][:, self.channel])


@dataclass(frozen=True, repr=False)
class Neuron(Objective):
    """One spatial position of a channel; ``y``/``x`` default to the center of the map.

    The map's size follows the image size, which grows during the multi-scale recipe: with the
    default center the neuron stays the central one at every scale.
    """

    layer: LayerRef | str
    channel: int
    y: int | None = None
    x: int | None = None

    @property
    def layers(self) -> tuple[LayerRef | str, ...]:
        return (self.layer,)

    @property
    def description(self) -> str:
        where = "" if self.y is None and self.x is None else f", y={self.y}, x={self.x}"
        return f"neuron({self.layer}, {self.channel}{where})"

    def resolve(self, model: LoadedModel) -> Neuron:
        ref = resolve_layer(model, self.layer)
        check_channel(model, ref, self.channel)
        return Neuron(ref, self.channel, self.y, self.x)

    def __call__(self, activations: Activations) -> torch.Tensor:
        act = activations[self.layer][:, self.channel]
        if act.dim() != 3:
            raise InvalidObjectiveError(f"neuron() needs a spatial layer; {self.layer} gives shape "
                                        f"{tuple(act.shape[1:])} per channel")
        height, width = act.shape[-2:]
        y = height // 2 if self.y is None else self.y
        x = width // 2 if self.x is None else self.x
        if not (0 <= y < height and 0 <= x < width):
            raise InvalidObjectiveError(f"Neuron position y={y}, x={x} is outside the {height}x{width} map of "
                                        f"{self.layer} at this image size")
        return act[:, y, x]


@dataclass(frozen=True, repr=False)
class ClassLogit(Objective):
    """The pre-softmax score of one class in the model's output."""

    index: int
    label: str | None = field(default=None, compare=False)

    @property
    def layers(self) -> tuple[LayerRef | str, ...]:
        return (LayerRef(OUTPUT),)

    @property
    def description(self) -> str:
        return f"class({self.index})"

    def resolve(self, model: LoadedModel) -> ClassLogit:
        classes = layer_info(model, LayerRef(OUTPUT)).channels
        if not 0 <= self.index < classes:
            raise ChannelError(f"Class {self.index} is out of range for {model.name}, which has {classes} "
                               f"classes (0-{classes - 1})")
        label = model.categories[self.index] if model.categories else None
        return ClassLogit(self.index, label)

    def __call__(self, activations: Activations) -> torch.Tensor:
        return _spatial_mean(activations[LayerRef(OUTPUT)][:, self.index])


def channel(layer: str | LayerRef, index: int) -> Channel:
    """Mean activation of channel ``index`` of ``layer`` (the paper's objective)."""
    return Channel(layer, int(index))


def neuron(layer: str | LayerRef, index: int, y: int | None = None, x: int | None = None) -> Neuron:
    """Activation of channel ``index`` of ``layer`` at one position (default: the center)."""
    return Neuron(layer, int(index), y, x)


def class_logit(index: int) -> ClassLogit:
    """Logit of class ``index`` in the model's output."""
    return ClassLogit(int(index))
