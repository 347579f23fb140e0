"""The network with its non-linearities replaced by the closest linear operation, and an intervention hook.

:func:`linearized` is a :class:`torch.overrides.TorchFunctionMode`: while it is active, every call of a
rectifier-like activation (ReLU, ReLU6/hardtanh, leaky ReLU, ELU, GELU, SiLU, hardswish, mish) returns its
input unchanged, and max pooling becomes average pooling with the same window. A mode sees the *functions*
the network calls, so activations written as ``F.relu(x)`` or ``x.relu()`` in a ``forward`` are caught as
well as ``nn.ReLU`` modules (which call the same functions). Eval-mode batch norm is affine already. Other
non-linear functions (a sigmoid gate, a softmax) are left as they are: gradients linearize them at the
point where the network is evaluated.

:class:`Intervene` replaces one layer's output during a forward pass (``fn(output) -> new output``), at the
call the :class:`~filterscope.layers.LayerRef` names: the circuits make it a gradient leaf, mask channels,
or read it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import UnknownLayerError
from ..layers import LayerRef
from ..zoo.model import LoadedModel

__all__ = ["linearized", "Intervene", "Leaf", "IDENTITY_FUNCTIONS"]

IDENTITY_FUNCTIONS = frozenset({
    F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_,
    F.relu6, F.hardtanh, F.hardtanh_, torch._C._nn.hardtanh, torch._C._nn.hardtanh_,  # ReLU6 is a hardtanh
    F.leaky_relu, F.leaky_relu_, F.elu, F.elu_, F.celu, F.selu, F.gelu, F.silu, F.hardswish, F.mish,
})
"""Activation functions that :func:`linearized` replaces by the identity."""

_POOLS: dict[Any, Any] = {F.max_pool1d: F.avg_pool1d, F.max_pool2d: F.avg_pool2d, F.max_pool3d: F.avg_pool3d,
                          torch.max_pool1d: F.avg_pool1d, torch.max_pool2d: F.avg_pool2d,
                          torch.max_pool3d: F.avg_pool3d}
_ADAPTIVE: dict[Any, Any] = {F.adaptive_max_pool1d: F.adaptive_avg_pool1d,
                             F.adaptive_max_pool2d: F.adaptive_avg_pool2d,
                             F.adaptive_max_pool3d: F.adaptive_avg_pool3d}
_POOL_NAMES = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


def _average_pool(average: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    given = dict(zip(("input", *_POOL_NAMES), args)) | kwargs
    dilation = given.get("dilation", 1)
    if given.get("return_indices") or dilation not in (1, (1,), (1, 1), (1, 1, 1), [1, 1]):
        raise NotImplementedError("a max pool with indices or dilation has no average-pool equivalent here")
    stride = given.get("stride") or given["kernel_size"]
    return average(given["input"], given["kernel_size"], stride, given.get("padding", 0),
                   ceil_mode=bool(given.get("ceil_mode", False)), count_include_pad=False)


class _Linearized(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func in IDENTITY_FUNCTIONS:
            x = args[0] if args else kwargs["input"]
            inplace = bool(kwargs.get("inplace")) or getattr(func, "__name__", "").endswith("_")
            return x if inplace else x.clone()
        if func in _POOLS:
            return _average_pool(_POOLS[func], args, kwargs)
        if func in _ADAPTIVE:
            if kwargs.get("return_indices") or (len(args) > 2 and args[2]):
                raise NotImplementedError("an adaptive max pool with indices has no average-pool equivalent")
            return _ADAPTIVE[func](args[0] if args else kwargs["input"], args[1] if len(args) > 1
                                   else kwargs["output_size"])
        return func(*args, **kwargs)


def linearized() -> TorchFunctionMode:
    """A context manager: inside it, activations are the identity and max pools are average pools."""
    return _Linearized()


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
