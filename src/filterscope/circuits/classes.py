"""The direct effect of units on the model's classes: the linearized path from a layer to the logits.

For a unit ``u`` of layer A, the effect on class ``c`` is the derivative of logit ``c`` of the
:func:`~.linear.linearized` network with respect to adding 1 to channel ``u`` at every position of A: the
classes the unit promotes (positive) and suppresses (negative). One forward pass in forward-mode automatic
differentiation would give a unit's effect on every class at once; it is computed as the equivalent double
backward pass (``v -> d(v . logits)/dA`` is linear in ``v``; its derivative along the unit's one-hot channel
is the Jacobian-vector product), which needs no forward-mode rules (their loading warns in torch 2.13). Units
go through in batches (a batch of zero inputs, one unit's tangent each), so the cost
grows with the units asked for, not with the number of classes (the reverse direction, a backward pass per
class, costs 10-17 s for a middle layer of EfficientNet-Lite0 against well under one here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..arguments import checked
from ..errors import FilterscopeError
from ..hooks import Intervene, Leaf, source_calls
from ..layers import OUTPUT, Capture, LayerRef, check_channel, layer_info, resolve_layer
from ..zoo.model import LoadedModel, coerce_model, frozen
from .linear import linearized
from .weights import Connection

__all__ = ["ClassEffects", "class_effects", "CLASS_BATCH"]

CLASS_BATCH = 16
"""Units per forward pass."""


@dataclass(frozen=True)
class ClassEffects:
    """``effects[j, c]``: the linearized effect of unit ``units[j]`` of ``layer`` on output ``c``."""

    layer: LayerRef
    units: tuple[int, ...]
    effects: torch.Tensor
    names: tuple[str, ...] | None

    def top(self, unit: int, k: int = 5) -> tuple[list[Connection], list[Connection]]:
        """The ``k`` classes ``unit`` promotes most, and the ``k`` it suppresses most."""
        row = self.effects[self.units.index(unit)]
        order = torch.argsort(row, descending=True, stable=True).tolist()
        k = min(k, len(order))
        name = (lambda c: self.names[c]) if self.names else (lambda c: None)
        up = [Connection(c, float(row[c]), name=name(c)) for c in order[:k] if row[c] > 0]
        down = [Connection(c, float(row[c]), name=name(c)) for c in reversed(order[-k:]) if row[c] < 0]
        return up, down


@checked
def class_effects(model: LoadedModel | torch.nn.Module, layer: str | LayerRef, units: Sequence[int] | None = None,
                  ) -> ClassEffects:
    """The linearized direct effect of ``units`` of ``layer`` (default: all) on the model's outputs."""
    loaded = coerce_model(model)
    ref = resolve_layer(loaded, layer)
    channels = layer_info(loaded, ref).channels
    chosen = list(range(channels)) if units is None else [int(u) for u in units]
    for u in chosen:
        check_channel(loaded, ref, u)
    out, calls = resolve_layer(loaded, OUTPUT), source_calls(loaded, ref)
    parts = [_effects(loaded, ref, out, calls, chosen[i:i + CLASS_BATCH]) for i in range(0, len(chosen), CLASS_BATCH)]
    effects = torch.cat(parts) if parts else torch.zeros(0, 0)
    names = loaded.categories if loaded.categories and len(loaded.categories) == effects.shape[1] else None
    return ClassEffects(ref, tuple(chosen), effects, names)


def _effects(loaded: LoadedModel, ref: LayerRef, out: LayerRef, calls: int, units: list[int]) -> torch.Tensor:
    """``(len(units), outputs)`` by the double backward pass of the module docstring."""
    leaf = Leaf()
    x = torch.zeros(len(units), loaded.preprocessing.channels, *loaded.preprocessing.input_shape,
                    device=loaded.device)
    with frozen(loaded.module), linearized(), torch.enable_grad(), \
            Intervene(loaded, ref, leaf, calls), Capture(loaded, [out]) as capture:
        logits = capture(x)[out].reshape(len(units), -1)
    a = leaf.tensor
    if a is None or not logits.requires_grad:
        raise FilterscopeError(f"The output of {loaded.name} does not depend on layer {ref}")
    tangent = torch.zeros_like(a)
    tangent[torch.arange(len(units)), torch.tensor(units)] = 1.0
    v = torch.zeros_like(logits, requires_grad=True)
    (g,) = torch.autograd.grad(logits, a, grad_outputs=v, create_graph=True)
    (jvp,) = torch.autograd.grad(g, v, grad_outputs=tangent)
    return jvp.detach().float().cpu()
