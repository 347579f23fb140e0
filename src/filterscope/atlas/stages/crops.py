"""The crops stage: each wanted unit's exemplars cut from their images around the maximum, sized to the layer's
receptive field, stored as JPEG crops and thumbnails in the atlas (what the microscope and ``atlas unit`` show).

It runs in the building process (decoding in a background thread): the work is reading images the pass already
read once, so a cluster would only move them twice.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image

from ...analysis.inputs import decode_image, decoded
from ...errors import FilterscopeError
from ...runtime.core import prefetch
from ...tensors import to_pil
from ...zoo.model import LoadedModel
from ..records import Crop, CropJob
from ..store import AtlasStore
from ..tasks import TaskFailure
from .base import BuildContext, BuildProgress, BuildRequest, LayerPlan, Recorded, Stage, register_stage

__all__ = ["CropStage", "CROP_SIDE", "EXEMPLAR_THUMBNAIL_SIDE"]

EXEMPLAR_THUMBNAIL_SIDE = 96
"""Exemplar thumbnails (stored in the atlas) fit in this many pixels (a web page's grid)."""
CROP_SIDE = 224
"""Exemplar crops larger than this are scaled down to it."""


@register_stage
class CropStage(Stage[LayerPlan, int]):
    """Exemplar crops (see the module docstring)."""

    name = "crops"
    after = ("exemplars",)
    counts = "image"

    def wanted(self, request: BuildRequest) -> bool:
        return request.dataset is not None

    def plan(self, context: BuildContext) -> Sequence[LayerPlan]:
        return [layer for layer in context.plan if layer.id in context.pass_ids]

    def record(self, context: BuildContext, task: LayerPlan, outcome: int | TaskFailure) -> Recorded:
        raise NotImplementedError("crops are cut and recorded in execute")

    def execute(self, context: BuildContext) -> None:
        report = context.report(self.name)
        for layer in self.plan(context):
            report.done += _cut_crops(context.store, context.loaded, layer, context.pass_ids[layer.id],
                                      context.request.fit, context.progress)


def _jpeg(image: Image.Image, side: int) -> bytes:
    image = image.copy()
    if max(image.size) > side or max(image.size) < side // 2:
        scale = side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _cut_crops(store: AtlasStore, loaded: LoadedModel, layer: LayerPlan, pass_id: int, fit: str,
               progress: BuildProgress) -> int:
    """Crops and thumbnails of the exemplars of ``layer``'s wanted units that have none yet."""
    jobs = store.exemplars_without_crops(pass_id, layer.units)
    if not jobs:
        return 0
    by_image: dict[str, list[CropJob]] = {}
    for job in jobs:
        by_image.setdefault(job.path, []).append(job)
    paths = list(by_image)
    done, batch = 0, []

    def load(path: str) -> Image.Image | None:
        try:
            return to_pil(decoded(*decode_image(loaded, path, fit, None)).pixels)
        except (FilterscopeError, OSError):
            return None

    for number, (path, view) in enumerate(zip(paths, prefetch(paths, load)), start=1):
        for job in by_image[path]:
            if view is None:
                continue
            box = job.box
            crop = view.crop((box[0], box[1], box[2], box[3])) if box[2] > box[0] and box[3] > box[1] else view
            side = CROP_SIDE if max(crop.size) > CROP_SIDE else max(crop.size)
            batch.append(Crop(job.id, _jpeg(crop, side), _jpeg(crop, EXEMPLAR_THUMBNAIL_SIDE)))
        if len(batch) >= 256 or number == len(paths):
            store.set_crops(batch)
            done += len(batch)
            batch = []
        progress.stage("crops", number, len(paths))
    return done
