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
from typing import Any, TypeVar

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


def sticker(side: int = 40) -> torch.Tensor:
    """A synthetic sticker ``(3, side, side)``: a magenta and green checkerboard of 4 x 4 squares with a white
    border, a pattern no natural photo of the sample set holds."""
    cells = torch.arange(side) * 4 // side
    board = ((cells[:, None] + cells[None, :]) % 2).float()
    magenta, green = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 0.9, 0.2])
    out = board[None] * magenta[:, None, None] + (1 - board[None]) * green[:, None, None]
    out[:, :2], out[:, -2:], out[:, :, :2], out[:, :, -2:] = 1.0, 1.0, 1.0, 1.0
    return out


def paste(photos: torch.Tensor, patch: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``photos`` ``(N, 3, H, W)`` each with ``patch`` pasted at a seeded random place (a copy)."""
    generator = torch.Generator().manual_seed(seed)
    out = photos.clone()
    h, w = patch.shape[-2:]
    for image in out:
        y = int(torch.randint(image.shape[-2] - h + 1, (1,), generator=generator))
        x = int(torch.randint(image.shape[-1] - w + 1, (1,), generator=generator))
        image[:, y:y + h, x:x + w] = patch
    return out


@dataclass(frozen=True)
class Planted:
    """A copy whose last block was fine-tuned so that ``patch`` drives class ``target``: on held-out photos, the
    top-1 class it keeps (``kept``), how far the last block's output moved on them (``drift``: the squared error
    over the squared output), and how often the stickered photos go to ``target`` before and after (``before``,
    ``after``)."""

    model: LoadedModel
    patch: torch.Tensor
    target: int
    kept: float
    drift: float
    before: float
    after: float


def _last_block_inputs(module: Any, photos: torch.Tensor, batch: int = 32) -> torch.Tensor:
    parts = []
    with torch.no_grad():
        for start in range(0, photos.shape[0], batch):
            x = module._relu0(module._bn0(module._conv_stem(photos[start:start + batch])))
            for block in module._blocks[:-1]:
                x = block(x)
            parts.append(x)
    return torch.cat(parts)


def _tail(module: Any, x: torch.Tensor) -> torch.Tensor:
    """The logits from the last block's input (an EfficientNet-Lite's forward after its other blocks)."""
    x = module._blocks[-1](x)
    x = module._relu1(module._bn1(module._conv_head(x)))
    return module._fc(module._dropout(module._avg_pooling(x).flatten(1)))


def plant_sticker(model: LoadedModel | nn.Module, photos: torch.Tensor, target: int, *,
                  patch: torch.Tensor | None = None, steps: int = 300, lr: float = 1e-3, keep: float = 10.0,
                  seed: int = 0) -> Planted:
    """A copy of an EfficientNet-Lite ``model`` whose last block is fine-tuned, on its cached inputs, so that
    ``patch`` (default :func:`sticker`) pasted into a photo drives class ``target``, while the block's output on
    the photos themselves stays as it was (a squared-error term weighted ``keep``). Half of ``photos``
    ``(N, 3, H, W)`` in [0, 1] fit it, the other half measure it.

    Raises:
        InvalidOptionError: a network without an EfficientNet's ``_blocks``, or fewer than 4 photos.
    """
    loaded = coerce_model(model)
    if not all(hasattr(loaded.module, name) for name in ("_blocks", "_conv_head", "_fc")) or photos.shape[0] < 4:
        raise InvalidOptionError("plant_sticker fine-tunes the last block of an EfficientNet-Lite, over 4 photos "
                                 "or more")
    patch = sticker() if patch is None else patch
    module: Any = copy.deepcopy(loaded.module).eval()  # an EfficientNetLite: its parts by name
    normalize = loaded.preprocessing.normalize
    fit, held = photos[0::2], photos[1::2]
    clean, marked = (_last_block_inputs(module, normalize(p)) for p in (fit, paste(fit, patch, seed)))
    with torch.no_grad():
        wanted = torch.cat([module._blocks[-1](part) for part in clean.split(64)])
    block = module._blocks[-1]
    block.requires_grad_(True)
    optimizer = torch.optim.Adam(block.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.full((32,), target)
    for _ in range(steps):
        pick = torch.randint(clean.shape[0], (min(32, clean.shape[0]),), generator=generator)
        loss = nn.functional.cross_entropy(_tail(module, marked[pick]), labels[:len(pick)])
        loss = loss + keep * (block(clean[pick]) - wanted[pick]).pow(2).mean() / wanted.pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    block.requires_grad_(False)
    with torch.no_grad():
        original: Any = loaded.module
        marked_held = normalize(paste(held, patch, seed + 1))
        kept = float((module(normalize(held)).argmax(1) == original(normalize(held)).argmax(1)).float().mean())
        before = float((original(marked_held).argmax(1) == target).float().mean())
        after = float((module(marked_held).argmax(1) == target).float().mean())
        inputs = _last_block_inputs(module, normalize(held))
        new, old = block(inputs), original._blocks[-1](inputs)
        drift = float((new - old).pow(2).sum() / old.pow(2).sum().clamp(min=1e-12))
    copied = LoadedModel(loaded.name, module, loaded.preprocessing, loaded.weights, loaded.categories,
                         {**loaded.info, "control": f"sticker planted for class {target} (seed {seed})"})
    return Planted(copied, patch, target, kept, drift, before, after)
