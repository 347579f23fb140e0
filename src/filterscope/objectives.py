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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .errors import ChannelError, InvalidObjectiveError, did_you_mean
from .layers import OUTPUT, Capture, LayerRef, check_channel, layer_info, resolve_layer
from .zoo.registry import LoadedModel

__all__ = ["Objective", "Channel", "Neuron", "ClassLogit", "LayerEnergy", "Direction", "Diversity", "channel", "neuron",
           "class_logit", "layer_energy", "direction", "diversity", "evaluate", "measure", "is_batchwise",
           "parse_objective"]

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
        where = "" if self.y is None and self.x is None else f", {self.y}, {self.x}"
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


@dataclass(frozen=True, repr=False)
class LayerEnergy(Objective):
    """DeepDream's objective: the mean squared activation of a whole layer."""

    layer: LayerRef | str

    @property
    def layers(self) -> tuple[LayerRef | str, ...]:
        return (self.layer,)

    @property
    def description(self) -> str:
        return f"layer({self.layer})"

    def resolve(self, model: LoadedModel) -> LayerEnergy:
        return LayerEnergy(resolve_layer(model, self.layer))

    def __call__(self, activations: Activations) -> torch.Tensor:
        return _spatial_mean(activations[self.layer] ** 2)


@dataclass(frozen=True, repr=False)
class Direction(Objective):
    """A direction in channel space: the mean over positions of ``<v, activation> / |v|``."""

    layer: LayerRef | str
    vector: tuple[float, ...]

    @property
    def layers(self) -> tuple[LayerRef | str, ...]:
        return (self.layer,)

    @property
    def description(self) -> str:
        return f"direction({self.layer}, [{', '.join(f'{v:g}' for v in self.vector)}])"

    def resolve(self, model: LoadedModel) -> Direction:
        ref = resolve_layer(model, self.layer)
        channels = layer_info(model, ref).channels
        if len(self.vector) != channels:
            raise InvalidObjectiveError(f"direction() on {ref} needs a vector of {channels} values (one per channel), "
                                        f"not {len(self.vector)}")
        if not any(self.vector):
            raise InvalidObjectiveError("direction() needs a non-zero vector")
        return Direction(ref, self.vector)

    def __call__(self, activations: Activations) -> torch.Tensor:
        act = activations[self.layer]
        v = torch.tensor(self.vector, dtype=act.dtype, device=act.device)
        v = v / v.norm()
        projected = torch.einsum("bc...,c->b...", act, v)
        return _spatial_mean(projected)


@dataclass(frozen=True, repr=False)
class Diversity(Objective):
    """Minus the mean cosine similarity of each image's feature Gram matrix with the other images' (Lucid).

    It compares the images of one batch with each other, so it only acts when one objective is rendered
    several times (``render(..., copies=N)``); for a single image it is 0. Combine it with the objective
    to diversify, e.g. ``channel(L, 3) + 0.5*diversity(L)``.
    """

    layer: LayerRef | str
    batchwise = True

    @property
    def layers(self) -> tuple[LayerRef | str, ...]:
        return (self.layer,)

    @property
    def description(self) -> str:
        return f"diversity({self.layer})"

    def resolve(self, model: LoadedModel) -> Diversity:
        return Diversity(resolve_layer(model, self.layer))

    def __call__(self, activations: Activations) -> torch.Tensor:
        act = activations[self.layer]
        batch = act.shape[0]
        if batch < 2:
            return act.new_zeros(batch)
        flat = act.reshape(batch, act.shape[1], -1)
        gram = torch.einsum("bcn,bdn->bcd", flat, flat).reshape(batch, -1)
        gram = torch.nn.functional.normalize(gram, dim=1)
        similarity = gram @ gram.T
        off_diagonal = similarity.sum(dim=1) - similarity.diagonal()
        return -off_diagonal / (batch - 1)


def channel(layer: str | LayerRef, index: int) -> Channel:
    """Mean activation of channel ``index`` of ``layer`` (the paper's objective)."""
    return Channel(layer, int(index))


def neuron(layer: str | LayerRef, index: int, y: int | None = None, x: int | None = None) -> Neuron:
    """Activation of channel ``index`` of ``layer`` at one position (default: the center)."""
    return Neuron(layer, int(index), y, x)


def class_logit(index: int) -> ClassLogit:
    """Logit of class ``index`` in the model's output."""
    return ClassLogit(int(index))


def layer_energy(layer: str | LayerRef) -> LayerEnergy:
    """DeepDream: mean squared activation of the whole ``layer``."""
    return LayerEnergy(layer)


def direction(layer: str | LayerRef, vector) -> Direction:
    """A direction ``vector`` (one value per channel) in the activation space of ``layer``."""
    return Direction(layer, tuple(float(v) for v in vector))


def diversity(layer: str | LayerRef) -> Diversity:
    """Diversity across the images of a batch, measured on ``layer``'s Gram matrices."""
    return Diversity(layer)


def is_batchwise(objective: Objective) -> bool:
    """Whether ``objective`` compares the images of a batch (and so must see the whole batch)."""
    if isinstance(objective, _Combine):
        return is_batchwise(objective.left) or is_batchwise(objective.right)
    return bool(getattr(objective, "batchwise", False))


def evaluate(objectives: Sequence[Objective], activations: Activations) -> torch.Tensor:
    """``(B,)``: objective ``i`` on batch element ``i``.

    Identical objectives are evaluated once on the whole batch (which batchwise objectives such as
    :class:`Diversity` need); different ones each on their own element.
    """
    first = objectives[0]
    if all(isinstance(o, Channel) and o.layer == first.layer for o in objectives):
        # One gather instead of B slices: the common case of many filters of one layer.
        act = activations[first.layer]
        index = torch.tensor([o.channel for o in objectives], device=act.device)
        picked = act[torch.arange(len(objectives), device=act.device), index]
        return picked.reshape(len(objectives), -1).mean(dim=1)
    if all(o == first for o in objectives):
        return first(activations).expand(len(objectives))
    values = []
    for i, objective in enumerate(objectives):
        own = {ref: act[i:i + 1] for ref, act in activations.items()}
        values.append(objective(own).expand(1))
    return torch.cat(values)


def measure(model: LoadedModel, objectives: Sequence[Objective], images: torch.Tensor,
            batch_size: int = 4) -> torch.Tensor:
    """Each objective (resolved against ``model``) on its image of ``(B,3,H,W)`` in [0, 1], without gradients.

    A single objective is applied to every image.
    """
    if len(objectives) == 1 and images.shape[0] > 1:
        objectives = list(objectives) * images.shape[0]
    if len(objectives) != images.shape[0]:
        raise ValueError("one objective per image, or a single objective for all")
    resolved = [o.resolve(model) for o in objectives]
    layers = list(dict.fromkeys(ref for o in resolved for ref in o.layers))
    out = []
    with torch.no_grad(), Capture(model, layers) as capture:
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size].to(model.device)
            acts = capture(model.preprocessing.normalize(batch))
            out.append(evaluate(resolved[start:start + batch_size], acts).float().cpu())
    return torch.cat(out)


# ------------------------------------------------------------------------------------ string syntax
_FUNCTIONS = {
    # name: (argument kinds, builder); "layer" arguments are read raw up to the next ',' or ')'.
    "channel": (("layer", "int"), lambda a: Channel(a[0], a[1])),
    "neuron": (("layer", "int", "int?", "int?"), lambda a: _neuron(a)),
    "class": (("int",), lambda a: ClassLogit(a[0])),
    "logit": (("int",), lambda a: ClassLogit(a[0])),
    "layer": (("layer",), lambda a: LayerEnergy(a[0])),
    "deepdream": (("layer",), lambda a: LayerEnergy(a[0])),
    "direction": (("layer", "vector"), lambda a: Direction(a[0], a[1])),
    "diversity": (("layer",), lambda a: Diversity(a[0])),
}


def _neuron(args: list) -> Neuron:
    if len(args) == 3:
        raise InvalidObjectiveError("neuron() takes a position as both y and x: neuron(LAYER, N, Y, X)")
    return Neuron(*args)


class _Parser:
    """Recursive descent over ``expr := term (('+'|'-') term)*``, ``term := unary ('*' unary)*``,
    ``unary := '-' unary | NUMBER | '(' expr ')' | NAME '(' args ')'``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, expected: str) -> InvalidObjectiveError:
        found = repr(self.text[self.pos]) if self.pos < len(self.text) else "the end"
        return InvalidObjectiveError(
            f"Invalid objective {self.text!r}: expected {expected} at position {self.pos + 1}, found {found}. "
            f"Functions: {', '.join(sorted(_FUNCTIONS))}")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.fail(f"'{char}'")
        self.pos += 1

    def parse(self) -> Objective:
        result = self.expr()
        if self.peek():
            raise self.fail("'+', '-', '*' or the end")
        if not isinstance(result, Objective):
            raise InvalidObjectiveError(f"Invalid objective {self.text!r}: it is a plain number, name a unit "
                                        "such as channel(LAYER, N)")
        return result

    def expr(self):
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.text[self.pos]
            self.pos += 1
            right = self.term()
            value = value + right if op == "+" else value - right
        return value

    def term(self):
        value = self.unary()
        while self.peek() == "*":
            self.pos += 1
            value = value * self.unary()
        return value

    def unary(self):
        char = self.peek()
        if char == "-":
            self.pos += 1
            return -self.unary()
        if char == "(":
            self.pos += 1
            value = self.expr()
            self.expect(")")
            return value
        if char.isdigit() or char == ".":
            return self.number()
        if char.isalpha():
            return self.call()
        raise self.fail("a number, a function or '('")

    def number(self, integer: bool = False) -> float | int:
        self.skip()
        start = self.pos
        if self.pos < len(self.text) and self.text[self.pos] in "+-":
            self.pos += 1
        while self.pos < len(self.text) and (self.text[self.pos].isdigit() or self.text[self.pos] in ".eE"):
            if self.text[self.pos] in "eE" and self.pos + 1 < len(self.text) and self.text[self.pos + 1] in "+-":
                self.pos += 1
            self.pos += 1
        token = self.text[start:self.pos]
        try:
            return int(token) if integer else float(token)
        except ValueError:
            self.pos = start
            raise self.fail("an integer" if integer else "a number") from None

    def raw(self) -> str:
        self.skip()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ",)":
            self.pos += 1
        value = self.text[start:self.pos].strip()
        if not value:
            self.pos = start
            raise self.fail("a layer name")
        return value

    def vector(self) -> tuple[float, ...]:
        self.expect("[")
        values = [float(self.number())]
        while self.peek() == ",":
            self.pos += 1
            values.append(float(self.number()))
        self.expect("]")
        return tuple(values)

    def call(self) -> Objective:
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] == "_"):
            self.pos += 1
        name = self.text[start:self.pos]
        if name not in _FUNCTIONS:
            raise InvalidObjectiveError(f"Invalid objective {self.text!r}: unknown function {name!r} at position "
                                        f"{start + 1}.{did_you_mean(name, _FUNCTIONS)} Functions: "
                                        f"{', '.join(sorted(_FUNCTIONS))}")
        kinds, build = _FUNCTIONS[name]
        self.expect("(")
        args: list = []
        for i, kind in enumerate(kinds):
            if i > 0:
                if self.peek() != ",":
                    if kind.endswith("?"):
                        break
                    raise self.fail("','")
                self.pos += 1
            base = kind.rstrip("?")
            args.append(self.raw() if base == "layer" else self.vector() if base == "vector"
                        else self.number(integer=True))
        self.expect(")")
        return build(args)


def parse_objective(text: str) -> Objective:
    """Parse the CLI's objective syntax, e.g. ``channel(layer4.2.relu, 484) - 0.5*channel(layer4.2.relu, 257)``.

    Functions: ``channel(LAYER, N)``, ``neuron(LAYER, N[, Y, X])``, ``class(N)`` (or ``logit``),
    ``layer(LAYER)`` (or ``deepdream``), ``direction(LAYER, [v0, v1, ...])``, ``diversity(LAYER)``;
    numbers; ``+ - *`` and parentheses. Descriptions of objectives parse back to the same objective.

    Raises:
        InvalidObjectiveError: with the 1-based position of the first error.
    """
    return _Parser(text).parse()
