"""Occlusion sensitivity maps: a patch slid over the image, batched through the truncated network; for
each filter, the drop of its mean activation mapped back onto the pixels (beyond the paper)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from ..arguments import checked
from ..errors import ChannelError, RegionError
from ..layers import LayerRef
from ..runtime.core import ANALYSIS_BATCH, Forward, Runtime
from ..zoo.model import LoadedModel, coerce_model
from .activations import checked_layer, filter_means
from .inputs import AnalysisImage, prepare_image
from .occlusion import fill_image

__all__ = ["SensitivityMaps", "sensitivity_maps"]


@dataclass
class SensitivityMaps:
    """Per-filter occlusion sensitivity.

    Attributes:
        filters: The filters mapped.
        maps: ``(F,S,S)``: at each pixel, the mean drop of the filter's mean activation over all patch
            positions covering it (positive = occluding here lowers the filter).
        baseline: ``(F,)`` the filters' mean activation on the unoccluded image.
        image: The image in the network's view.
        patch, stride, fill: How the patch was slid.
    """

    filters: list[int]
    maps: torch.Tensor
    baseline: torch.Tensor
    image: AnalysisImage
    patch: int
    stride: int
    fill: str

    def peak(self, index: int) -> tuple[int, int]:
        """``(y, x)`` of the largest drop for filter number ``index``."""
        flat = int(self.maps[index].argmax())
        return divmod(flat, self.maps.shape[-1])


def _positions(height: int, width: int, patch: int, stride: int) -> list[tuple[int, int]]:
    """The occluder's top-left corners: every ``stride`` px, and the last row and column at the border."""

    def starts(size: int) -> list[int]:
        found = list(range(0, size - patch + 1, stride))
        if found[-1] != size - patch:
            found.append(size - patch)
        return found

    return [(y, x) for y in starts(height) for x in starts(width)]


def _occluded(pixels: torch.Tensor, replacement: torch.Tensor, chunk: list[tuple[int, int]],
              patch: int) -> torch.Tensor:
    """Copies of ``pixels`` ``(C, H, W)``, each with ``replacement`` in the patch at one of ``chunk``'s corners."""
    batch = pixels.expand(len(chunk), -1, -1, -1).clone()
    for i, (y, x) in enumerate(chunk):
        batch[i, :, y:y + patch, x:x + patch] = replacement[:, y:y + patch, x:x + patch]
    return batch


@checked
def sensitivity_maps(model: LoadedModel, image: str | os.PathLike[str] | Image.Image | AnalysisImage,
                     layer: str | LayerRef, filters: Sequence[int], *, patch: int | None = None,
                     stride: int | None = None, fill: str = "neutral", seed: int = 0,
                     batch_size: int = ANALYSIS_BATCH, fit: str = "crop", runtime: Runtime | None = None,
                     progress: Callable[[int, int], None] | None = None) -> SensitivityMaps:
    """Slide a ``patch`` x ``patch`` occluder over the image with ``stride`` and map each filter's drop.

    ``patch`` defaults to 1/7 of the input's shorter side (32 px at 224 px) and ``stride`` to a quarter of
    the patch; ``fill`` (see :data:`~filterscope.analysis.occlusion.FILLS`) to the model's ``neutral``.

    All occluded copies go through the network in batches of ``batch_size``, stopping at ``layer``.
    They are built in this thread: building them (torch copies) in a background thread competes with
    the network's threads and was measured 1.3-2x slower. ``progress(done, total)`` is called after each batch.
    """
    model = coerce_model(model)
    ref, channels = checked_layer(model, layer)
    for f in filters:
        if not 0 <= f < channels:
            raise ChannelError(f"Filter {f} is out of range for layer {ref} of {model.name}, which has "
                               f"{channels} filters (0-{channels - 1})")
    if batch_size < 1:
        raise RegionError(f"batch_size must be at least 1 (got {batch_size})")
    item = image if isinstance(image, AnalysisImage) else prepare_image(model, image, fit=fit)
    height, width = item.pixels.shape[-2:]
    patch = patch if patch is not None else max(1, round(min(height, width) / 7))
    stride = stride if stride is not None else max(1, patch // 4)
    if not 1 <= patch <= min(height, width) or stride < 1:
        raise RegionError(f"Patch must be 1-{min(height, width)} px and stride at least 1 (got patch {patch}, "
                          f"stride {stride})")
    replacement = fill_image(item.pixels, fill, seed, model.preprocessing.mean)

    positions = _positions(height, width, patch, stride)
    chunks = [positions[start:start + batch_size] for start in range(0, len(positions), batch_size)]

    drops = torch.zeros(len(filters), height, width, dtype=torch.float64)
    counts = torch.zeros(height, width, dtype=torch.float64)
    done = 0
    with torch.no_grad(), Forward(model, [ref], runtime) as forward:
        baseline = filter_means(forward, ref, item.pixels[None], filters)[0]
        for chunk in chunks:
            values = filter_means(forward, ref, _occluded(item.pixels, replacement, chunk, patch), filters)
            for i, (y, x) in enumerate(chunk):
                drops[:, y:y + patch, x:x + patch] += (baseline - values[i]).double()[:, None, None]
                counts[y:y + patch, x:x + patch] += 1
            done += len(chunk)
            if progress is not None:
                progress(done, len(positions))
    maps = (drops / counts.clamp(min=1)).float()
    return SensitivityMaps(list(filters), maps, baseline, item, patch, stride, fill)
