"""Objectives: what the optimization maximizes.

An objective is a small object with

* ``layers``: the layers whose activations it reads (names as the user wrote them until
  :meth:`Objective.resolve` turns them into checked :class:`~filterscope.layers.LayerRef` s), and
* ``__call__(activations) -> (B,)``: one value per batch element, computed from
  ``{LayerRef: (B, C, ...)}``, to be **maximized** (the render loop negates it once).

One value per element is what lets one forward pass optimize many filters at once. Objectives combine
with ``+``, ``-``, unary ``-`` and ``*`` (by a number or another objective), and carry a readable
``description`` such as ``channel(layer4.2.relu, 484) - 0.5*channel(layer4.2.relu, 257)``.

Everything else that depends on the kind of objective is a method of it, so no other module needs an
``isinstance`` chain: :meth:`Objective.file_stem` (its output file name), :attr:`Objective.title` (a
panel title), :meth:`Objective.metadata` (extra PNG text fields), :attr:`Objective.batchwise` (whether
it compares the images of a batch).

The functions of the string syntax (``channel(L, n)``, ...) are registered in :data:`OBJECTIVES` with
:func:`register_objective`; :mod:`filterscope.objective_syntax` parses strings with them, so a user's
registered function works in ``-O`` on the command line too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..arguments import checked
from ..errors import ChannelError, InvalidObjectiveError
from ..layers import OUTPUT, LayerRef, check_channel, layer_info, layer_slug, resolve_layer, slug
from ..registry import Registry
from ..zoo.model import LoadedModel

__all__ = ["Objective", "Channel", "Neuron", "ClassLogit", "LayerEnergy", "Direction", "DirectionNeuron", "Diversity",
           "channel", "neuron",
           "class_logit", "layer_energy", "direction", "diversity", "relu", "Rectified", "objective_values",
           "layers_of",
           "OBJECTIVES",
           "ObjectiveFunction", "register_objective", "ARGUMENT_KINDS"]

Activations = Mapping[Any, torch.Tensor]
"""``{LayerRef: (B, C, ...)}``: keyed by the resolved layers of the objectives (typed loosely: an
objective's ``layers`` are ``LayerRef | str`` until :meth:`Objective.resolve`)."""


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

    @property
    def batchwise(self) -> bool:
        """Whether it compares the images of a batch (then all its images must share one batch)."""
        return False

    def file_stem(self) -> str:
        """Its part of an output file name (after the model name), e.g. ``layer4.2.relu-f0484``."""
        return slug(self.description)[:120].strip("_")

    @property
    def title(self) -> str:
        """A short title for a figure panel."""
        return self.description

    def metadata(self) -> dict[str, str]:
        """Extra PNG text fields that name the unit (``layer`` and ``filter`` for a channel)."""
        return {}

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

    @property
    def batchwise(self) -> bool:
        return self.left.batchwise or self.right.batchwise

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

    def file_stem(self) -> str:
        return f"{layer_slug(self.layer)}-f{self.channel:04d}"

    @property
    def title(self) -> str:
        return f"filter {self.channel}"

    def metadata(self) -> dict[str, str]:
        return {"layer": str(self.layer), "filter": str(self.channel)}

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

    def file_stem(self) -> str:
        where = "" if self.y is None and self.x is None else f"-y{self.y}x{self.x}"
        return f"{layer_slug(self.layer)}-n{self.channel:04d}{where}"

    @property
    def title(self) -> str:
        return f"filter {self.channel}"

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

    def file_stem(self) -> str:
        return f"class{self.index:04d}"

    @property
    def title(self) -> str:
        return f"class {self.index}" + (f"\n{self.label}" if self.label else "")

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
class DirectionNeuron(Objective):
    """A direction at one position, shaped by its cosine: the activation atlas's icons (Lucid's
    ``direction_neuron_cossim``).

    With ``a`` the activation vector at ``(y, x)`` (default: the centre of the map, at every scale) and
    ``v`` the unit ``vector``: ``dot = <a, v>``, ``cos`` the cosine of ``a`` with ``cosine_with`` (default: ``v``
    itself), value ``dot * max(0.1, cos) ** power``. The cosine term keeps the optimization from reaching ``dot``
    by inflating every unit at once; with a whitened ``vector`` and the unwhitened one as ``cosine_with`` (the
    activation atlas's icons), the image is pushed along what is distinctive of the direction and kept
    pointing at the direction itself.
    """

    layer: LayerRef | str
    vector: tuple[float, ...]
    power: float = 2.0
    y: int | None = None
    x: int | None = None
    name: str = "direction"
    cosine_with: tuple[float, ...] | None = None

    @property
    def layers(self) -> tuple[LayerRef | str, ...]:
        return (self.layer,)

    @property
    def description(self) -> str:
        return f"direction_neuron({self.layer}, {self.name}, power={self.power:g})"

    def resolve(self, model: LoadedModel) -> DirectionNeuron:
        ref = resolve_layer(model, self.layer)
        channels = layer_info(model, ref).channels
        if len(self.vector) != channels:
            raise InvalidObjectiveError(f"direction_neuron() on {ref} needs a vector of {channels} values (one per "
                                        f"channel), not {len(self.vector)}")
        if not any(self.vector) or (self.cosine_with is not None and not any(self.cosine_with)):
            raise InvalidObjectiveError("direction_neuron() needs a non-zero vector")
        if self.cosine_with is not None and len(self.cosine_with) != channels:
            raise InvalidObjectiveError(f"direction_neuron() on {ref} needs cosine_with of {channels} values, not "
                                        f"{len(self.cosine_with)}")
        return DirectionNeuron(ref, self.vector, self.power, self.y, self.x, self.name, self.cosine_with)

    def file_stem(self) -> str:
        return f"{layer_slug(self.layer)}-{slug(self.name)}"

    def __call__(self, activations: Activations) -> torch.Tensor:
        act = activations[self.layer]
        if act.dim() != 4:
            raise InvalidObjectiveError(f"direction_neuron() needs a spatial layer; {self.layer} gives shape "
                                        f"{tuple(act.shape[1:])}")
        height, width = act.shape[-2:]
        y = height // 2 if self.y is None else self.y
        x = width // 2 if self.x is None else self.x
        a = act[:, :, y, x]
        v = torch.tensor(self.vector, dtype=a.dtype, device=a.device)
        dot = a @ (v / v.norm())
        if self.cosine_with is None:
            cosine = dot / (a.norm(dim=1) + 1e-8)
        else:
            w = torch.tensor(self.cosine_with, dtype=a.dtype, device=a.device)
            cosine = (a @ (w / w.norm())) / (a.norm(dim=1) + 1e-8)
        return dot * cosine.clamp(min=0.1) ** self.power


def _matched(act: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``target`` ``(C, H, W)`` on the device and grid of ``act`` ``(B, C, H', W')`` (resized when the grids
    differ, as at the small scales of a multi-scale recipe)."""
    t = target.to(act.device, act.dtype)
    if t.dim() == 3 and tuple(t.shape[-2:]) != tuple(act.shape[-2:]):
        t = torch.nn.functional.interpolate(t[None], size=act.shape[-2:], mode="bilinear", align_corners=False)[0]
    return t


@dataclass(frozen=True, repr=False, eq=False)
class Match(Objective):
    """Agreement of a layer's activations with given ones (``target``, ``(C, H, W)`` or ``(C,)``), one image's.

    * ``kind="cosine"``: their cosine similarity over the whole layer (feature inversion maximizes it);
    * ``kind="caricature"``: the dot product times the cosine (Lucid's ``dot_compare`` with ``cossim_pow=1``):
      more of what the layer sees, in the same proportions;
    * ``kind="closeness"``: minus the mean squared difference (a penalty that keeps an image near another).
    """

    layer: LayerRef | str
    target: torch.Tensor
    kind: str = "cosine"
    name: str = "image"

    KINDS = ("cosine", "caricature", "closeness")

    @property
    def layers(self) -> tuple[LayerRef | str, ...]:
        return (self.layer,)

    @property
    def description(self) -> str:
        return f"{self.kind}({self.layer}, {self.name})"

    def resolve(self, model: LoadedModel) -> Match:
        if self.kind not in self.KINDS:
            raise InvalidObjectiveError(f"Unknown match kind {self.kind!r}: use {', '.join(self.KINDS)}")
        ref = resolve_layer(model, self.layer)
        channels = layer_info(model, ref).channels
        if self.target.dim() not in (1, 3) or self.target.shape[0] != channels:
            raise InvalidObjectiveError(f"{self.kind}() on {ref} needs activations of {channels} channels, (C,) or "
                                        f"(C, H, W), not {tuple(self.target.shape)}")
        return Match(ref, self.target.detach().float(), self.kind, self.name)

    def __call__(self, activations: Activations) -> torch.Tensor:
        act = activations[self.layer]
        t = _matched(act, self.target)
        if t.dim() == 1:
            t = t.reshape(1, -1, *([1] * (act.dim() - 2))).expand_as(act[0])
        a, t = act.reshape(act.shape[0], -1), t.reshape(1, -1)
        if self.kind == "closeness":
            return -((a - t) ** 2).mean(dim=1)
        cosine = torch.nn.functional.cosine_similarity(a, t.expand_as(a), dim=1, eps=1e-8)
        if self.kind == "cosine":
            return cosine
        return (a * t).sum(dim=1) / max(t.shape[1], 1) * cosine


@dataclass(frozen=True, repr=False)
class Diversity(Objective):
    """Minus the mean cosine similarity of each image's feature Gram matrix with the other images' (Lucid).

    It compares the images of one batch with each other, so it only acts when one objective is rendered
    several times (``render(..., copies=N)``); for a single image it is 0. Combine it with the objective
    to diversify, e.g. ``channel(L, 3) + 0.5*diversity(L)``.
    """

    layer: LayerRef | str

    @property
    def layers(self) -> tuple[LayerRef | str, ...]:
        return (self.layer,)

    @property
    def batchwise(self) -> bool:
        return True

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


# ------------------------------------------------------------------------- registered functions
ARGUMENT_KINDS = ("layer", "int", "number", "vector", "objective")
"""Argument kinds of a registered function; a trailing ``?`` makes it (and all after it) optional."""


@dataclass(frozen=True)
class ObjectiveFunction:
    """A function of the string syntax: its name, argument kinds and the builder it calls."""

    name: str
    arguments: tuple[str, ...]
    build: Callable[..., Objective]
    doc: str = ""


OBJECTIVES: Registry[ObjectiveFunction] = Registry("objective function", InvalidObjectiveError,
                                                   "filterscope visualize --help")


@checked
def register_objective(name: str, *arguments: str) -> Callable[[Callable[..., Objective]], Callable[..., Objective]]:
    """Decorator: make ``name(ARG, ...)`` of the string syntax call the decorated builder.

    ``arguments`` are the kinds of the positional arguments, from :data:`ARGUMENT_KINDS`: ``layer`` (a
    layer name, read raw up to the next ``,`` or ``)``), ``int``, ``number``, ``vector`` (``[v0, v1,
    ...]``), ``objective`` (a whole expression); a trailing ``?`` marks an optional argument. For example::

        @fs.register_objective("center_channel", "layer", "int")
        def center_channel(layer, n):
            return fs.neuron(layer, n)
    """
    for kind in arguments:
        if kind.rstrip("?") not in ARGUMENT_KINDS:
            raise ValueError(f"Unknown argument kind {kind!r} for objective {name!r}: use {', '.join(ARGUMENT_KINDS)}")

    def decorator(build: Callable[..., Objective]) -> Callable[..., Objective]:
        OBJECTIVES.add(name, ObjectiveFunction(name, tuple(arguments), build, (build.__doc__ or "").strip()))
        return build

    return decorator


@dataclass(frozen=True, repr=False)
class Rectified(Objective):
    """``inner`` evaluated on rectified activations: ``relu(channel(L, n))`` is the mean of ``max(0, a)``
    over the channel's map, the post-activation value of a network that applies ``F.relu`` in its
    ``forward`` (where no module outputs it)."""

    inner: Objective

    @property
    def layers(self) -> tuple[LayerRef | str, ...]:
        return self.inner.layers

    @property
    def description(self) -> str:
        return f"relu({self.inner.description})"

    @property
    def batchwise(self) -> bool:
        return self.inner.batchwise

    def file_stem(self) -> str:
        return f"relu-{self.inner.file_stem()}"

    @property
    def title(self) -> str:
        return f"relu {self.inner.title}"

    def metadata(self) -> dict[str, str]:
        return self.inner.metadata()

    def resolve(self, model: LoadedModel) -> Objective:
        return Rectified(self.inner.resolve(model))

    def __call__(self, activations: Activations) -> torch.Tensor:
        return self.inner({ref: torch.relu(act) for ref, act in activations.items()})


@register_objective("relu", "objective")
def relu(objective: Objective) -> Rectified:
    """``objective`` on rectified activations (see :class:`Rectified`)."""
    return Rectified(objective)


@checked
@register_objective("channel", "layer", "int")
def channel(layer: str | LayerRef, index: int) -> Channel:
    """Mean activation of channel ``index`` of ``layer`` (the paper's objective)."""
    return Channel(layer, int(index))


@checked
@register_objective("neuron", "layer", "int", "int?", "int?")
def neuron(layer: str | LayerRef, index: int, y: int | None = None, x: int | None = None) -> Neuron:
    """Activation of channel ``index`` of ``layer`` at one position (default: the center)."""
    if (y is None) != (x is None):
        raise InvalidObjectiveError("neuron() takes a position as both y and x: neuron(LAYER, N, Y, X)")
    return Neuron(layer, int(index), y, x)


@checked
@register_objective("logit", "int")
@register_objective("class", "int")
def class_logit(index: int) -> ClassLogit:
    """Logit of class ``index`` in the model's output."""
    return ClassLogit(int(index))


@checked
@register_objective("deepdream", "layer")
@register_objective("layer", "layer")
def layer_energy(layer: str | LayerRef) -> LayerEnergy:
    """DeepDream: mean squared activation of the whole ``layer``."""
    return LayerEnergy(layer)


@checked
@register_objective("direction", "layer", "vector")
def direction(layer: str | LayerRef, vector: Sequence[float]) -> Direction:
    """A direction ``vector`` (one value per channel) in the activation space of ``layer``."""
    return Direction(layer, tuple(float(v) for v in vector))


@checked
@register_objective("diversity", "layer")
def diversity(layer: str | LayerRef) -> Diversity:
    """Diversity across the images of a batch, measured on ``layer``'s Gram matrices."""
    return Diversity(layer)


def layers_of(objectives: Sequence[Objective]) -> list[LayerRef]:
    """The layers the (resolved) ``objectives`` read, each once, in order of first use.

    Raises:
        InvalidObjectiveError: an objective was not resolved against a model.
    """
    layers = list(dict.fromkeys(ref for o in objectives for ref in o.layers))
    unresolved = [str(ref) for ref in layers if not isinstance(ref, LayerRef)]
    if unresolved:
        raise InvalidObjectiveError(f"Objectives must be resolved against a model first (layers {unresolved})")
    return [ref for ref in layers if isinstance(ref, LayerRef)]


def objective_values(objectives: Sequence[Objective], activations: Activations) -> torch.Tensor:
    """``(B,)``: objective ``i`` on batch element ``i``.

    Identical objectives are evaluated once on the whole batch (which batchwise objectives such as
    :class:`Diversity` need); different ones each on their own element.
    """
    first = objectives[0]
    channels = [o for o in objectives if isinstance(o, Channel)]
    if len(channels) == len(objectives) and all(o.layer == channels[0].layer for o in channels):
        # One gather instead of B slices: the common case of many filters of one layer.
        act = activations[channels[0].layer]
        index = torch.tensor([o.channel for o in channels], device=act.device)
        picked = act[torch.arange(len(objectives), device=act.device), index]
        return picked.reshape(len(objectives), -1).mean(dim=1)
    if all(o == first for o in objectives):
        return first(activations).expand(len(objectives))
    values = []
    for i, objective in enumerate(objectives):
        own = {ref: act[i:i + 1] for ref, act in activations.items()}
        values.append(objective(own).expand(1))
    return torch.cat(values)
