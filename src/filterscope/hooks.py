"""Hooks on one layer of a network, for any kind of analysis: replace its output, make it a gradient leaf, count
its calls.

:class:`Intervene` replaces one layer's output during a forward pass (``fn(output) -> new output``), at the call
the :class:`~filterscope.layers.LayerRef` names: circuits make it a gradient leaf (:class:`Leaf`), mask channels
or read it; activation atlases and image explanations read it. :func:`source_calls` says how many times a layer
runs in one forward pass (what :class:`Intervene` needs for the call ``-1``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .errors import UnknownLayerError
from .layers import LayerRef, layer_info
from .zoo.model import LoadedModel

__all__ = ["Intervene", "Leaf", "source_calls"]


class Intervene:
    """Replace the output of ``ref`` by ``fn(output)`` during forward passes (a context manager).

    ``fn`` receives the tensor the layer produced (at the call ``ref`` names; ``-1``: the last, which needs
    the number of calls, ``calls``) and returns what the rest of the network sees.
    """

    def __init__(self, model: LoadedModel, ref: LayerRef, fn: Callable[[torch.Tensor], torch.Tensor],
                 calls: int = 1) -> None:
        if ref.element or ref.port != "out" or not ref.name:
            raise UnknownLayerError(f"Layer {ref} of {model.name}: circuits need a module's own tensor output "
                                    f"(no element, no @in, not the model output)")
        self.model, self.ref, self.fn = model, ref, fn
        self.call = ref.call % calls if ref.call < 0 else ref.call
        self.count = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> Intervene:
        module = self.model.module.get_submodule(self.ref.name)
        self._handles = [self.model.module.register_forward_pre_hook(self._start),  # each pass counts from 0
                         module.register_forward_hook(self._hook)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _start(self, _module: torch.nn.Module, _args: object) -> None:
        self.count = 0

    def _hook(self, _module: torch.nn.Module, _inputs: object, output: object) -> Any:
        call, self.count = self.count, self.count + 1
        if call != self.call:
            return None
        if not isinstance(output, torch.Tensor):
            raise UnknownLayerError(f"Layer {self.ref} of {self.model.name} gives {type(output).__name__}, not a "
                                    "tensor")
        return self.fn(output)


class Leaf:
    """An :class:`Intervene` function that makes the layer's output a gradient leaf (``tensor``, float32) and
    hands the network a copy (the network may change its input in place)."""

    def __init__(self) -> None:
        self.tensor: torch.Tensor | None = None

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        self.tensor = output.detach().float().requires_grad_(True)
        return self.tensor.clone()


def source_calls(model: LoadedModel, ref: LayerRef) -> int:
    """How many times the module of ``ref`` runs in one forward pass."""
    return layer_info(model, LayerRef(ref.name)).calls
