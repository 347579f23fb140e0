"""Layers: naming, listing, and capturing activations with a truncated forward pass.

A layer is a module path as ``named_modules()`` gives it (``layer4.2.relu``, ``_blocks.15``); the
empty name (or ``output``) is the whole model's output. Two more ways to name one:

* the paper's child-index form, where each dotted component is a child's name or its position among
  the parent's children: in ResNet-34, ``7.2.relu`` is ``layer4.2.relu`` ("the relu of the 3rd basic
  block of the 7th layer", counting ``conv1, bn1, relu, maxpool, layer1, ...`` from 0);
* a call selector ``NAME:K`` for a module that runs several times in one forward pass: torchvision's
  ``BasicBlock.relu`` runs after ``bn1`` (call 0) and after the residual addition (call 1). Without a
  selector the **last** call is captured, which is the block's output and what the paper visualized.

:class:`Capture` hooks only the requested modules, and stops the forward pass (by raising an internal
exception from the hook) as soon as every requested output exists: nothing after the deepest target
layer is computed. Hooks are removed when the ``with`` block ends, whatever happens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .arguments import checked
from .errors import ChannelError, ModelInputError, UnknownLayerError, did_you_mean
from .zoo.model import LoadedModel, coerce_model, frozen

__all__ = ["LayerRef", "LayerInfo", "Capture", "list_layers", "resolve_layer", "layer_info", "check_channel",
           "OUTPUT", "slug", "layer_slug"]

OUTPUT = ""  # the name of the whole model's output


@dataclass(frozen=True)
class LayerRef:
    """A resolved layer: a module path, which of its calls in one forward pass (``-1`` = last), which
    element of a tuple/list/dict output (``element``, a path of indices and keys), and whether it is
    the module's output (``port="out"``) or the input it receives (``port="in"``)."""

    name: str
    call: int = -1
    element: tuple[int | str, ...] = ()
    port: str = "out"

    def __str__(self) -> str:
        shown = self.name or "output"
        if self.call != -1:
            shown += f":{self.call}"
        shown += "".join(f"[{e}]" for e in self.element)
        return shown + ("@in" if self.port == "in" else "")


Structure = tuple[int, ...] | list["Structure"] | dict[str, "Structure"] | None
"""What a module produced, per sample: a tensor's shape, a list for a tuple/list, a dict for a dict."""


@dataclass(frozen=True)
class LayerInfo:
    """What one module produces in a forward pass at the model's input size.

    Attributes:
        name: Module path ("" for the model output).
        type: The module's class name.
        shape: Output shape of one sample, e.g. ``(512, 7, 7)``: at the last call, or at the call (and
            element, and port) that :func:`layer_info` was asked about; ``()`` when the output is not
            one tensor.
        calls: How many times the module runs in one forward pass.
        call_shapes: The output shape at each call (``()`` where it is not one tensor).
        outputs: The output :data:`Structure` at each call.
        inputs: The :data:`Structure` of the first input the module receives, at each call.
    """

    name: str
    type: str
    shape: tuple[int, ...]
    calls: int
    call_shapes: tuple[tuple[int, ...], ...] = ()
    outputs: tuple[Structure, ...] = ()
    inputs: tuple[Structure, ...] = ()

    @property
    def channels(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def kind(self) -> str:
        """``tensor``, or how a non-tensor output is made (``tuple of 2``, ``dict: out, aux``)."""
        return _describe(self.outputs[-1]) if self.outputs else "tensor"


# Probe results per module and input shape; weak keys, so a dropped model frees its entry.
_PROBES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, int, int], dict[str, LayerInfo]]] = (
    weakref.WeakKeyDictionary())


def _structure(value: object) -> Structure:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape[1:])
    if isinstance(value, (tuple, list)):
        return [_structure(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _structure(v) for k, v in value.items()}
    return None


def _describe(structure: Structure) -> str:
    if isinstance(structure, tuple):
        return "tensor"
    if isinstance(structure, list):
        return f"tuple of {len(structure)}"
    if isinstance(structure, dict):
        return "dict: " + ", ".join(structure)
    return "no tensor"


def _select(value: Any, element: tuple[int | str, ...]) -> Any:
    """``value[e0][e1]...``: list/tuple elements by index, dict entries by key (compared as strings)."""
    for e in element:
        if isinstance(value, dict):
            value = next(v for k, v in value.items() if str(k) == str(e))
        else:
            value = value[int(e)]
    return value


def _shape(model: LoadedModel, size: int | tuple[int, int] | None) -> tuple[int, int, int]:
    """``(channels, height, width)`` of a probe input: the model's own, or ``size`` (a side or ``(H, W)``)."""
    height, width = model.preprocessing.input_shape if size is None else (
        (size, size) if isinstance(size, int) else size)
    return model.preprocessing.channels, height, width


def _probe(model: LoadedModel, size: int | tuple[int, int] | None = None) -> dict[str, LayerInfo]:
    shape = _shape(model, size)
    cached = _PROBES.setdefault(model.module, {})
    if shape in cached:
        return cached[shape]
    modules = dict(model.module.named_modules())
    outputs: dict[str, list[Structure]] = {name: [] for name in modules}
    inputs: dict[str, list[Structure]] = {name: [] for name in modules}

    def make_hooks(name: str) -> tuple[Callable[..., None], Callable[..., None]]:
        def before(_module: nn.Module, args: tuple[Any, ...]) -> None:
            inputs[name].append(_structure(args[0]) if args else None)

        def after(_module: nn.Module, _args: object, output: object) -> None:
            outputs[name].append(_structure(output))

        return before, after

    handles = []
    for name, module in modules.items():
        before, after = make_hooks(name)
        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        with torch.no_grad(), frozen(model.module):
            model.module(torch.zeros(1, *shape, device=model.device))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:  # what torch raises for a bad input shape
        channels, height, width = shape
        raise ModelInputError(
            f"{model.name} fails on a {channels}-channel {height}x{width} input ({str(exc).splitlines()[0]}): "
            "check its preprocessing (input_size, and one mean/std value per input channel; --preprocessing FILE "
            "on the command line)") from exc
    finally:
        for handle in handles:
            handle.remove()
    infos = {}
    for name, module in modules.items():
        shapes = tuple(o if isinstance(o, tuple) else () for o in outputs[name])
        infos[name] = LayerInfo(name, type(module).__name__, shapes[-1] if shapes else (), len(shapes), shapes,
                                tuple(outputs[name]), tuple(inputs[name]))
    cached[shape] = infos
    return infos


@checked
def list_layers(model: LoadedModel, size: int | tuple[int, int] | None = None) -> list[LayerInfo]:
    """Every module that runs in a forward pass, in definition order, with its output shape.

    Args:
        model: The model.
        size: Input of the probe pass, a side or ``(height, width)``; defaults to the model's input shape.
    """
    model = coerce_model(model)
    infos = _probe(model, size)
    return [info for info in infos.values() if info.calls > 0]


def _unknown(model: LoadedModel, spec: str, names: Iterable[str]) -> UnknownLayerError:
    return UnknownLayerError(
        f"Unknown layer {spec!r} in {model.name}.{did_you_mean(spec, [n for n in names if n])}"
        f" List layers with: filterscope layers {model.name}"
    )


_SPEC = re.compile(r"^(?P<name>[^:\[@]*)(?::(?P<call>[^\[@]*))?(?P<elements>(?:\[[^\]]*\])*)(?P<port>@in)?$")


def _parse(spec: str) -> tuple[str, int, tuple[int | str, ...], str]:
    match = _SPEC.match(spec.strip())
    if match is None:
        raise UnknownLayerError(f"Bad layer {spec!r}: expected NAME, NAME:CALL, NAME[ELEMENT]... or NAME@in "
                                "(e.g. layer4.2.relu:0, head[1], backbone[out], fc@in)")
    call = -1
    if match.group("call") is not None:
        try:
            call = int(match.group("call"))
        except ValueError:
            raise UnknownLayerError(f"Bad call selector in layer {spec!r}: expected NAME:K with an integer K "
                                    "(0 = first call, -1 = last)") from None
    element = tuple(int(e) if re.fullmatch(r"-?\d+", e) else e.strip("'\"")
                    for e in re.findall(r"\[([^\]]*)\]", match.group("elements")))
    return match.group("name").strip(), call, element, "in" if match.group("port") else "out"


def _element_structure(ref: LayerRef, structure: Structure, model: LoadedModel) -> tuple[int, ...]:
    """The tensor shape at ``ref.element`` of ``structure``; an error that lists the choices otherwise."""
    what = "receives" if ref.port == "in" else "outputs"
    base = LayerRef(ref.name, ref.call, (), ref.port)
    for depth, e in enumerate(ref.element):
        here = LayerRef(ref.name, ref.call, ref.element[:depth], ref.port)
        if isinstance(structure, list):
            if not isinstance(e, int) or not -len(structure) <= e < len(structure):
                raise UnknownLayerError(f"Layer {here} of {model.name} {what} a tuple of {len(structure)}: "
                                        f"[{e}] is not one of [0]..[{len(structure) - 1}]")
            structure = structure[e]
        elif isinstance(structure, dict):
            if str(e) not in structure:
                raise UnknownLayerError(f"Layer {here} of {model.name} {what} a dict without {e!r}: use one of "
                                        + ", ".join(f"{here}[{k}]" for k in structure))
            structure = structure[str(e)]
        else:
            raise UnknownLayerError(f"Layer {here} of {model.name} {what} a tensor: it has no element [{e}]")
    if isinstance(structure, (list, dict)):
        stem, suffix = str(LayerRef(ref.name, ref.call, ref.element)), "@in" if ref.port == "in" else ""
        keys = range(len(structure)) if isinstance(structure, list) else structure
        raise UnknownLayerError(f"Layer {ref} of {model.name} {what} a {_describe(structure)}: pick one with "
                                + ", ".join(f"{stem}[{k}]{suffix}" for k in keys))
    if structure is None:
        raise UnknownLayerError(f"Layer {base} of {model.name} {what} no tensor there; list layers with: "
                                f"filterscope layers {model.name}")
    return structure


_NODE_CALL = re.compile(r"^(?P<module>.+)_(?P<call>\d+)$")
_FUNCTIONAL = re.compile(r"(^|\.)(add|sub|mul|truediv|cat|flatten|getitem|mean|relu|sigmoid|adaptive_avg_pool2d)"
                         r"(_\d+)?$")


def _graph_node(model: LoadedModel, text: str, modules: dict[str, nn.Module]) -> tuple[str, int]:
    """torchvision's feature-extraction names (``get_graph_node_names``): ``layer1.0.relu_1`` is the second call
    of ``layer1.0.relu`` (``layer1.0.relu:1`` here); a functional node (``layer1.0.add``, ``flatten``) has no
    module to hook, which the error says, with what to use instead."""
    match = _NODE_CALL.match(text)
    if match and match.group("module") in modules:
        return match.group("module"), int(match.group("call"))
    if _FUNCTIONAL.search(text) and text.rpartition(".")[0] in modules:
        raise UnknownLayerError(
            f"Layer {text!r} of {model.name} looks like a functional node of torchvision's get_graph_node_names "
            "(an operation, not a module), which filterscope cannot hook: its value is the input of the module that "
            f"runs next: use that module's name with @in (e.g. NEXT@in). List layers with: filterscope layers "
            f"{model.name}")
    return text, -1


@checked
def resolve_layer(model: LoadedModel, spec: str | LayerRef) -> LayerRef:
    """Turn a layer spec into a checked :class:`LayerRef`.

    A spec is a module path or the paper's child-index path (``layer4.2.relu``, ``7.2.relu``), then
    optionally ``:K`` (the K-th call of a module that runs several times), ``[I]`` or ``[KEY]`` (an element
    of a tuple/list or dict output; repeatable), and ``@in`` (the input the module receives instead of
    its output: the value after a functional activation such as ``F.relu`` is the input of the next
    module). ``output`` is the whole model's output. torchvision's feature-extraction names are accepted
    too: ``layer1.0.relu_1`` is ``layer1.0.relu:1`` (but a plain ``layer1.0.relu`` is its *last* call here,
    its first there).

    Raises:
        UnknownLayerError: no such module, a module that never runs, a call it does not make, or an
            element that does not exist or does not lead to one tensor (the message lists the choices).
    """
    model = coerce_model(model)
    if isinstance(spec, LayerRef):
        text, call, element, port = spec.name, spec.call, spec.element, spec.port
    else:
        text, call, element, port = _parse(spec)
    modules = dict(model.module.named_modules())
    if text == "output" and "output" not in modules:
        text = OUTPUT
    if text not in modules and call == -1:
        text, call = _graph_node(model, text, modules)
    if text in modules:
        name = text
    else:
        module, parts = model.module, []
        for component in text.split("."):
            children = dict(module.named_children())
            if component in children:
                module = children[component]
                parts.append(component)
            elif component.isdigit() and int(component) < len(children):
                child_name = list(children)[int(component)]
                module = children[child_name]
                parts.append(child_name)
            else:
                raise _unknown(model, text, modules)
        name = ".".join(parts)
    info = _probe(model)[name]
    if info.calls == 0:
        raise UnknownLayerError(f"Layer {name!r} of {model.name} never runs in a forward pass, so it has no "
                                f"activation. List layers with: filterscope layers {model.name}")
    if not -info.calls <= call < info.calls:
        raise UnknownLayerError(f"Layer {name!r} of {model.name} runs {info.calls} time(s) per forward pass; "
                                f"call {call} does not exist (use 0..{info.calls - 1}, or -1 for the last)")
    call %= info.calls
    # The last call is written -1, so that equal layers compare equal however they were named.
    ref = LayerRef(name, -1 if call == info.calls - 1 else call, element, port)
    structures = info.inputs if port == "in" else info.outputs
    _element_structure(ref, structures[call], model)
    return ref


@checked
def layer_info(model: LoadedModel, spec: str | LayerRef) -> LayerInfo:
    """:class:`LayerInfo` of a layer given in any accepted form; ``shape`` is that of the selected call,
    element and port."""
    model = coerce_model(model)
    ref = resolve_layer(model, spec)
    info = _probe(model)[ref.name]
    structures = info.inputs if ref.port == "in" else info.outputs
    return dataclasses.replace(info, shape=_element_structure(ref, structures[ref.call], model))


def check_channel(model: LoadedModel, layer: LayerRef, channel: int) -> None:
    """Raise :class:`ChannelError` unless ``0 <= channel < channels`` of ``layer``."""
    channels = layer_info(model, layer).channels
    if not 0 <= channel < channels:
        raise ChannelError(f"Channel {channel} is out of range for layer {layer} of {model.name}, which has "
                           f"{channels} channels (0-{channels - 1})")


def slug(text: str) -> str:
    """``text`` as a file-name part: runs of characters other than letters, digits and ``_.@-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", text) or "output"


def layer_slug(layer: object) -> str:
    """A layer as a file-name part: ``layer4.2.relu``, ``act@0`` for a call selector, ``output``."""
    return slug(str(layer).replace(":", "@"))


class _StopForward(Exception):
    """Raised from a hook once every requested activation is captured."""


class Capture:
    """Hooks that capture the outputs (or inputs) of some layers and cut the forward pass short.

    Use as a context manager::

        with Capture(model, [LayerRef("layer4.2.relu")]) as capture:
            activations = capture(x)   # {LayerRef: (B, C, H, W)}, graph attached when x requires grad

    Args:
        model: The model.
        layers: Layers to capture, as :func:`resolve_layer` returns them.
    """

    def __init__(self, model: LoadedModel, layers: Sequence[LayerRef]) -> None:
        self.model = model
        infos = _probe(model)
        self.layers = list(dict.fromkeys(layers))
        # (name, port, non-negative call index) → the LayerRefs it answers (several elements of one output)
        self._wanted: dict[tuple[str, str, int], list[LayerRef]] = {}
        for ref in self.layers:
            calls = infos[ref.name].calls
            key = (ref.name, ref.port, ref.call % calls if ref.call < 0 else ref.call)
            self._wanted.setdefault(key, []).append(ref)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._counts: dict[tuple[str, str], int] = {}
        self._captured: dict[LayerRef, torch.Tensor] = {}

    def __enter__(self) -> Capture:
        modules = dict(self.model.module.named_modules())
        for name, port in dict.fromkeys((name, port) for name, port, _ in self._wanted):
            if port == "in":
                self._handles.append(modules[name].register_forward_pre_hook(self._make_pre_hook(name)))
            else:
                self._handles.append(modules[name].register_forward_hook(self._make_hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _take(self, name: str, port: str, value: object) -> None:
        call = self._counts.get((name, port), 0)
        self._counts[(name, port)] = call + 1
        refs = self._wanted.get((name, port, call))
        if refs is None:
            return
        for ref in refs:
            tensor = _select(value, ref.element)
            if not isinstance(tensor, torch.Tensor):
                raise UnknownLayerError(f"Layer {ref} of {self.model.name} gives {type(tensor).__name__}, not a "
                                        f"tensor: pick a layer whose output is one (filterscope layers "
                                        f"{self.model.name})")
            # The forward pass may go on and change this tensor in place (`out += identity`): keep a copy
            # unless it is the last capture, after which the pass stops.
            last = len(self._captured) + 1 == len(self.layers)
            self._captured[ref] = tensor if last else tensor.clone()
        if len(self._captured) == len(self.layers):
            raise _StopForward

    def _make_hook(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            self._take(name, "out", output)

        return hook

    def _make_pre_hook(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            self._take(name, "in", args[0] if args else None)

        return hook

    def __call__(self, x: torch.Tensor) -> dict[LayerRef, torch.Tensor]:
        """Run the model on the normalized batch ``x`` up to the deepest requested layer."""
        if not self._handles:
            raise RuntimeError("Capture must be used inside a `with` block")
        self._counts.clear()
        self._captured = {}
        with contextlib.suppress(_StopForward):
            self.model.module(x)
        captured, self._captured = self._captured, {}
        missing = [str(ref) for ref in self.layers if ref not in captured]
        if missing:
            raise RuntimeError(f"Layers {missing} produced no output in the forward pass")
        return captured
