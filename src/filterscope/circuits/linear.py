"""The network with its non-linearities replaced by the closest linear operation, and an intervention hook.

:func:`linearized` is a :class:`torch.overrides.TorchFunctionMode`: while it is active, every call of a
rectifier-like activation (ReLU, ReLU6/hardtanh, leaky ReLU, ELU, GELU, SiLU, hardswish, mish) returns its
input unchanged, and max pooling becomes average pooling with the same window. A mode sees the *functions*
the network calls, so activations written as ``F.relu(x)`` or ``x.relu()`` in a ``forward`` are caught as
well as ``nn.ReLU`` modules (which call the same functions). Eval-mode batch norm is affine already. Other
non-linear functions (a sigmoid gate, a softmax) are left as they are: gradients linearize them at the
point where the network is evaluated.

:class:`~filterscope.hooks.Intervene` and :class:`~filterscope.hooks.Leaf` moved to :mod:`filterscope.hooks`;
importing them from here still works, with a ``DeprecationWarning``, for one release.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .._deprecated import moved

__all__ = ["linearized", "IDENTITY_FUNCTIONS"]

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


__getattr__ = moved(__name__, {"Intervene": "filterscope.hooks", "Leaf": "filterscope.hooks"})
