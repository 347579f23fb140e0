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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import ChannelError, ModelInputError, UnknownLayerError, did_you_mean
from .zoo.registry import LoadedModel, frozen

__all__ = ["LayerRef", "LayerInfo", "Capture", "list_layers", "resolve_layer", "layer_info", "check_channel",
           "OUTPUT", "slug", "layer_slug"]

OUTPUT = ""  # the name of the whole model's output


@dataclass(frozen=True)
class LayerRef:
    """A resolved layer: a module path and which of its calls in one forward pass (``-1`` = last)."""

    name: str
    call: int = -1

    def __str__(self) -> str:
        shown = self.name or "output"
        return shown if self.call == -1 else f"{shown}:{self.call}"


@dataclass(frozen=True)
class LayerInfo:
    """What one module produces in a forward pass at the model's input size.

    Attributes:
        name: Module path ("" for the model output).
        type: The module's class name.
        shape: Output shape of one sample, e.g. ``(512, 7, 7)``: at the last call, or at the call that
            :func:`layer_info` was asked about.
        calls: How many times the module runs in one forward pass.
        call_shapes: The output shape at each call.
    """

    name: str
    type: str
    shape: tuple[int, ...]
    calls: int
    call_shapes: tuple[tuple[int, ...], ...] = ()

    @property
    def channels(self) -> int:
        return self.shape[0] if self.shape else 1


# Probe results per module and input shape; weak keys, so a dropped model frees its entry.
_PROBES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, int, int], dict[str, LayerInfo]]] = (
    weakref.WeakKeyDictionary())


def _first_tensor(output: object) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


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
    shapes: dict[str, list[tuple[int, ...]]] = {name: [] for name in modules}

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            tensor = _first_tensor(output)
            shapes[name].append(tuple(tensor.shape[1:]) if tensor is not None else ())

        return hook

    handles = [module.register_forward_hook(make_hook(name)) for name, module in modules.items()]
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
    infos = {
        name: LayerInfo(name, type(module).__name__, shapes[name][-1] if shapes[name] else (), len(shapes[name]),
                        tuple(shapes[name]))
        for name, module in modules.items()
    }
    cached[shape] = infos
    return infos


def list_layers(model: LoadedModel, size: int | tuple[int, int] | None = None) -> list[LayerInfo]:
    """Every module that runs in a forward pass, in definition order, with its output shape.

    Args:
        model: The model.
        size: Input of the probe pass, a side or ``(height, width)``; defaults to the model's input shape.
    """
    infos = _probe(model, size)
    return [info for info in infos.values() if info.calls > 0]


def _unknown(model: LoadedModel, spec: str, names: Iterable[str]) -> UnknownLayerError:
    return UnknownLayerError(
        f"Unknown layer {spec!r} in {model.name}.{did_you_mean(spec, [n for n in names if n])}"
        f" List layers with: filterscope layers {model.name}"
    )


def resolve_layer(model: LoadedModel, spec: str | LayerRef) -> LayerRef:
    """Turn a layer name, child-index path or ``NAME:K`` selector into a checked :class:`LayerRef`.

    Raises:
        UnknownLayerError: no such module, a module that never runs, or a call it does not make.
    """
    if isinstance(spec, LayerRef):
        text, call = spec.name, spec.call
    else:
        text, call = spec.strip(), -1
        if ":" in text:
            text, _, call_text = text.rpartition(":")
            try:
                call = int(call_text)
            except ValueError:
                raise UnknownLayerError(f"Bad call selector in layer {spec!r}: expected NAME:K with an integer K "
                                        "(0 = first call, -1 = last)") from None
    modules = dict(model.module.named_modules())
    if text == "output" and "output" not in modules:
        text = OUTPUT
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
    return LayerRef(name, -1 if call == info.calls - 1 else call)


def layer_info(model: LoadedModel, spec: str | LayerRef) -> LayerInfo:
    """:class:`LayerInfo` of a layer given in any accepted form; ``shape`` is that of the selected call."""
    ref = resolve_layer(model, spec)
    info = _probe(model)[ref.name]
    return dataclasses.replace(info, shape=info.call_shapes[ref.call])


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
    """Hooks that capture the outputs of some layers and cut the forward pass short.

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
        # (name, non-negative call index) → the LayerRef it answers
        self._wanted: dict[tuple[str, int], LayerRef] = {}
        for ref in self.layers:
            calls = infos[ref.name].calls
            self._wanted[(ref.name, ref.call % calls if ref.call < 0 else ref.call)] = ref
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._counts: dict[str, int] = {}
        self._captured: dict[LayerRef, torch.Tensor] = {}

    def __enter__(self) -> Capture:
        modules = dict(self.model.module.named_modules())
        for name in dict.fromkeys(name for name, _ in self._wanted):
            self._handles.append(modules[name].register_forward_hook(self._make_hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _make_hook(self, name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            call = self._counts.get(name, 0)
            self._counts[name] = call + 1
            ref = self._wanted.get((name, call))
            if ref is None:
                return
            tensor = _first_tensor(output)
            if tensor is None:
                raise UnknownLayerError(f"Layer {ref} of {self.model.name} outputs {type(output).__name__}, not a "
                                        f"tensor: pick a layer whose output is one (filterscope layers "
                                        f"{self.model.name})")
            if len(self._captured) + 1 == len(self._wanted):
                self._captured[ref] = tensor
                raise _StopForward
            # The forward pass goes on, and may change this tensor in place (`out += identity`).
            self._captured[ref] = tensor.clone()

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
