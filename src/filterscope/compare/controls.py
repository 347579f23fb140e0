"""Controls for a diff: a copy of a network that computes the same function with one layer's units reordered and
rescaled, so a diff of the two must find the same network (every unit matched to its moved self, CKA 1).

The layer's producing convolution (and its batch norm, if any) has its output channels permuted and multiplied by
positive factors; the next convolution divides its input channels by the same factors, in the same order. Between
the two only channel-wise operations may run that commute with a positive scale (a ReLU, not a ReLU6: the
EfficientNet blocks' projection is linear, so their last batch norm is the place).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from ..errors import InvalidOptionError
from ..zoo.model import LoadedModel, coerce_model

__all__ = ["Permuted", "permuted_copy"]


@dataclass(frozen=True)
class Permuted:
    """The copy, and where each unit went: unit ``i`` of the original is unit ``permutation[i]`` of the copy,
    ``scale[i]`` times as large."""

    model: LoadedModel
    permutation: torch.Tensor
    scale: torch.Tensor


M = TypeVar("M", bound=nn.Module)


def _module(model: nn.Module, name: str, kind: type[M]) -> M:
    found = dict(model.named_modules()).get(name)
    if not isinstance(found, kind):
        raise InvalidOptionError(f"{name!r} is not a {kind.__name__} of the model")
    return found


@torch.no_grad()
def permuted_copy(model: LoadedModel | nn.Module, conv: str, next_conv: str, *, norm: str | None = None,
                  seed: int = 0, low: float = 0.5, high: float = 2.0) -> Permuted:
    """A copy of ``model`` whose ``conv`` output channels (and ``norm``'s, a batch norm right after it) are permuted
    and scaled by factors drawn from ``low`` … ``high`` (seeded), ``next_conv``'s input channels compensating."""
    loaded = coerce_model(model)
    module = copy.deepcopy(loaded.module)
    first = _module(module, conv, nn.Conv2d)
    second = _module(module, next_conv, nn.Conv2d)
    channels = int(first.out_channels)
    if second.in_channels != channels or second.groups != 1:
        raise InvalidOptionError(f"{next_conv!r} must read {conv!r}'s {channels} channels with groups=1")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(channels, generator=generator)  # new channel j holds old channel order[j]
    scale = low + (high - low) * torch.rand(channels, generator=generator)
    if norm is not None:
        last = _module(module, norm, nn.BatchNorm2d)
        for p in (first.weight, first.bias, last.running_mean, last.running_var):
            if p is not None:
                p.copy_(p[order])
        last.weight.copy_((last.weight * scale)[order])
        last.bias.copy_((last.bias * scale)[order])
    else:
        first.weight.copy_((first.weight * scale[:, None, None, None])[order])
        if first.bias is not None:
            first.bias.copy_((first.bias * scale)[order])
    second.weight.copy_((second.weight / scale[None, :, None, None])[:, order])
    where = torch.empty_like(order)
    where[order] = torch.arange(channels)
    copied = LoadedModel(loaded.name, module, loaded.preprocessing, loaded.weights, loaded.categories,
                         {**loaded.info, "control": f"{conv} permuted and rescaled (seed {seed})"})
    return Permuted(copied, where, scale)
