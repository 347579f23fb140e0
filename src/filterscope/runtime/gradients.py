"""Lucid's redirected ReLU gradient, so that units that start at exactly zero can be optimized at all.

A ReLU whose input is negative passes no gradient: a unit that is 0 on the starting noise (all its
inputs below zero) gives the optimizer nothing to follow, and the image stays gray. Lucid's
``redirected_relu_grad`` lets the gradient through a negative-input ReLU *when it pushes the input up*
(towards activating), but only for an image whose ordinary ReLU gradient is zero everywhere in that
layer; once any unit passes gradient, the ordinary gradient is used. ReLU6 (a ``Hardtanh(0, 6)``) is
redirected at both ends alike.

:class:`RedirectedReLU` hooks every ``nn.ReLU``/``nn.ReLU6`` module of a network for the duration of a
``with`` block; the override acts only while ``active`` is true (the render loop turns it on for a
recipe's first ``relu_override_steps`` steps). Forward values are unchanged. ReLUs applied as functions
(``F.relu``) are not modules and are not redirected.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["RedirectedReLU", "redirected_relu"]


class _Redirect(torch.autograd.Function):
    """``clamp(x, lower, upper)`` forward; Lucid's redirected gradient backward (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lower: float, upper: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.bounds = (lower, upper)
        return x.clamp(lower, upper)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        lower, upper = ctx.bounds
        below, above = x < lower, x > upper
        ordinary = torch.where(below | above, torch.zeros_like(grad), grad)
        # grad is d(loss)/d(output), the loss minimized: grad > 0 pushes the input down, grad < 0 up.
        wrong_way = (below & (grad > 0)) | (above & (grad < 0))
        redirected = torch.where(wrong_way, torch.zeros_like(grad), grad)
        flowing = ordinary.reshape(grad.shape[0], -1).abs().sum(dim=1) > 0
        keep = flowing.reshape(-1, *([1] * (grad.dim() - 1)))
        return torch.where(keep, ordinary, redirected), None, None


def redirected_relu(x: torch.Tensor, lower: float = 0.0, upper: float = float("inf")) -> torch.Tensor:
    """``x.clamp(lower, upper)`` whose backward is Lucid's redirected ReLU gradient."""
    return _Redirect.apply(x, lower, upper)


class RedirectedReLU:
    """Context manager: the ``nn.ReLU``/``nn.ReLU6`` modules of ``module`` use the redirected gradient
    while ``active`` is true. In-place ReLUs run out of place meanwhile (the input is needed)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.active = False
        self.count = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._inplace: list[nn.Module] = []

    def __enter__(self) -> RedirectedReLU:
        for m in self.module.modules():
            if isinstance(m, (nn.ReLU, nn.ReLU6)):
                bounds = (0.0, 6.0) if isinstance(m, nn.ReLU6) else (0.0, float("inf"))
                if getattr(m, "inplace", False):
                    m.inplace = False
                    self._inplace.append(m)
                # first among the module's hooks, so that a capture of its output sees the redirected one
                self._handles.append(m.register_forward_hook(self._hook(*bounds), prepend=True))
                self.count += 1
        return self

    def _hook(self, lower: float, upper: float) -> Any:
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor | None:
            if not self.active or not torch.is_grad_enabled():
                return None
            return redirected_relu(inputs[0], lower, upper)

        return hook

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for m in self._inplace:
            m.inplace = True  # type: ignore[assignment]
        self._inplace.clear()
