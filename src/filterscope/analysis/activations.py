"""Mean activation of a layer's filters over images, without gradients, through the runtime's Forward.

The common step of every analysis: images ``(B,C,H,W)`` in [0, 1] in (the model's channel count, any height
and width), ``(B, K)`` mean activations of the layer's K filters out, in batches, the forward pass stopped at
the analysed layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ChannelError
from ..layers import LayerRef, layer_info, resolve_layer
from ..runtime.core import ANALYSIS_BATCH, Forward, Runtime
from ..zoo.model import LoadedModel, coerce_model

__all__ = ["checked_layer", "layer_means", "filter_means", "strongest_first", "nonfinite"]


def checked_layer(model: LoadedModel, layer: str | LayerRef, k: int | None = None) -> tuple[LayerRef, int]:
    ref = resolve_layer(model, layer)
    channels = layer_info(model, ref).channels
    if k is not None and not 1 <= k <= channels:
        raise ChannelError(f"k={k} is not possible for layer {ref} of {model.name}, which has {channels} filters "
                           f"(use 1-{channels})")
    return ref, channels


def layer_means(model: LoadedModel, layer: str | LayerRef, pixels: torch.Tensor, *,
                filters: Sequence[int] | None = None, batch_size: int = ANALYSIS_BATCH,
                runtime: Runtime | None = None) -> torch.Tensor:
    """Mean activation of every filter (or of ``filters``) for each image of ``(B,C,H,W)`` in [0, 1].

    Returns ``(B, C)`` (or ``(B, len(filters))``), float32 on the CPU. Runs in batches of
    ``batch_size`` under ``no_grad``, stopping the forward pass at ``layer``. Small batches are fastest
    on a CPU, where big ones spill the caches (see benchmarks/RESULTS.md).
    """
    model = coerce_model(model)
    ref = resolve_layer(model, layer)
    with torch.no_grad(), Forward(model, [ref], runtime) as forward:
        return torch.cat([filter_means(forward, ref, pixels[start:start + batch_size], filters)
                          for start in range(0, pixels.shape[0], batch_size)])


def filter_means(forward: Forward, ref: LayerRef, batch: torch.Tensor, filters: Sequence[int] | None) -> torch.Tensor:
    model = forward.model
    act = forward(model.preprocessing.normalize(batch.to(model.device)))[ref]
    if filters is not None:
        act = act[:, torch.tensor(list(filters), device=act.device)]
    return act.reshape(*act.shape[:2], -1).mean(dim=2).float().cpu()


def strongest_first(values: torch.Tensor) -> torch.Tensor:
    """Indices of ``values`` (last dimension), largest first; NaN and infinities last (they rank nothing)."""
    finite = torch.where(torch.isfinite(values), values, torch.full_like(values, -torch.inf))
    return finite.argsort(dim=-1, descending=True, stable=True)


def nonfinite(values: torch.Tensor) -> list[int]:
    """Indices of the non-finite entries of the ``(C,)`` ``values``."""
    return torch.nonzero(~torch.isfinite(values)).flatten().tolist()
