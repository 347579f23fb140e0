"""Which filters images drive: the mean activation of every filter, the top k, stability across images,
and how concentrated the response is (the paper's section 4.2 and Figure 5)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from ..arguments import checked
from ..display import html_table
from ..errors import ImageError
from ..layers import LayerRef
from ..runtime.core import ANALYSIS_BATCH, Forward, Runtime, prefetch
from ..zoo.model import LoadedModel, coerce_model
from ..zoo.preprocessing import Placement
from .activations import checked_layer, filter_means, nonfinite, strongest_first
from .inputs import AnalysisImage, ImageSource, augmentations, decode_image, decoded, image_list

__all__ = ["Concentration", "concentration", "Ranking", "rank_filters"]


@dataclass(frozen=True)
class Concentration:
    """How concentrated a layer's response is.

    Attributes:
        top_k_share: Share of the total positive mean activation held by the top k filters. With C filters
            and no preference it is about k/C; near 1 when a few filters take everything.
        top_to_median: Top filter's mean activation over the median of the positive filter means (layers
            without a ReLU have many negative means; those are left out so the ratio stays finite).
        effective_filters: exp(entropy) of the positive activations normalized to sum 1: the number of
            equally strong filters that would give the same spread.
        uniform_share: k/C, the top-k share of a layer with no preference, for comparison.
        scenario: The paper's reading (section 4.2): "few dominate" (i), "groups" (ii) or "no clear winner"
            (iii); a heuristic, see "Reading the concentration summary" in the docs (how-to/recipes.md).
    """

    top_k_share: float
    top_to_median: float
    effective_filters: float
    uniform_share: float
    scenario: str


def concentration(means: torch.Tensor, k: int) -> Concentration:
    """:class:`Concentration` of the ``(C,)`` mean activations for the top ``k`` (non-finite ones count as 0)."""
    positive = torch.nan_to_num(means.double(), nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0)
    total = float(positive.sum())
    channels = positive.numel()
    if total <= 0:
        return Concentration(0.0, 0.0, 0.0, k / channels, "no clear winner (iii)")
    ordered = positive.sort(descending=True).values
    share = float(ordered[:k].sum()) / total
    median = float(positive[positive > 0].median())
    ratio = float(ordered[0]) / median
    p = positive[positive > 0] / total
    effective = float(torch.exp(-(p * p.log()).sum()))
    uniform = k / channels
    # Thresholds in units of the uniform share: see "Reading the concentration summary" in docs/how-to/recipes.md.
    if ratio >= 8 and float(ordered[0]) >= 2 * float(ordered[min(k, channels - 1)]):
        scenario = "few dominate (i)"
    elif share >= 2.5 * uniform:
        scenario = "groups (ii)"
    else:
        scenario = "no clear winner (iii)"
    return Concentration(share, ratio, effective, uniform, scenario)


@dataclass
class Ranking:
    """Filters of one layer ranked by mean activation over one or more images.

    Attributes:
        model_name, layer: What was analysed.
        k: How many top filters are reported.
        image_names: One label per image (augmented views are averaged into their image).
        per_image: ``(N, C)`` mean activation of each filter for each image.
        means: ``(C,)`` the ranking's basis: the mean of ``per_image`` over images.
        augment: Random augmentations per image (0: the image alone).
    """

    model_name: str
    layer: str
    k: int
    image_names: list[str]
    per_image: torch.Tensor
    means: torch.Tensor
    augment: int = 0
    images: list[AnalysisImage] = field(default_factory=list, repr=False)

    @property
    def order(self) -> list[int]:
        """All filters, strongest first."""
        return strongest_first(self.means).tolist()

    @property
    def nonfinite(self) -> list[int]:
        """Filters whose mean activation is NaN or infinite (ranked last: a broken unit, not a strong one)."""
        return nonfinite(self.means)

    @property
    def top(self) -> list[int]:
        return self.order[:self.k]

    @property
    def top_values(self) -> list[float]:
        return [float(self.means[i]) for i in self.top]

    @property
    def concentration(self) -> Concentration:
        return concentration(self.means, self.k)

    def per_image_top(self) -> list[list[int]]:
        return [strongest_first(row)[:self.k].tolist() for row in self.per_image]

    @property
    def stability(self) -> float:
        """Mean share of each image's own top k that is in the overall top k (1.0 with one image)."""
        top = set(self.top)
        tops = self.per_image_top()
        return sum(len(top & set(t)) for t in tops) / (self.k * len(tops))

    def frequency(self) -> dict[int, int]:
        """For each overall top-k filter, in how many images' own top k it appears."""
        tops = [set(t) for t in self.per_image_top()]
        return {f: sum(f in t for t in tops) for f in self.top}

    def rows(self) -> list[dict[str, float | int | bool]]:
        """The full per-filter table, strongest first: rank, filter, mean, in_top_k, then per image."""
        rank = {f: r for r, f in enumerate(self.order, start=1)}
        out = []
        for f in self.order:
            row: dict[str, float | int | bool] = {"rank": rank[f], "filter": f, "mean_activation": float(self.means[f]),
                                                  "in_top_k": rank[f] <= self.k}
            if len(self.image_names) > 1:
                for name, values in zip(self.image_names, self.per_image):
                    row[f"image:{name}"] = float(values[f])
            out.append(row)
        return out

    def _repr_html_(self) -> str:
        """The top k as a table: what a notebook shows for a ranking (:mod:`filterscope.display`)."""
        rows = [(r, f, f"{float(self.means[f]):.4g}") for r, f in enumerate(self.top, start=1)]
        caption = (f"{self.model_name} {self.layer}: top {self.k} of {self.means.shape[0]} filters over "
                   f"{len(self.image_names)} image(s), stability {self.stability:.2f}")
        return html_table(caption, ["rank", "filter", "mean activation"], rows)

    def to_json(self) -> str:
        c = self.concentration
        return json.dumps({
            "model": self.model_name, "layer": self.layer, "k": self.k, "images": self.image_names,
            "augment": self.augment, "top": self.top, "top_values": self.top_values,
            "stability": self.stability, "top_frequency": {str(f): n for f, n in self.frequency().items()},
            "concentration": {"top_k_share": c.top_k_share, "top_to_median": c.top_to_median,
                              "effective_filters": c.effective_filters, "uniform_share": c.uniform_share,
                              "scenario": c.scenario},
            "filters": self.rows(),
        }, indent=2)

    def to_csv(self) -> str:
        rows = self.rows()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()


class _ViewSums:
    """Each image's summed filter means over its views, the views of consecutive images sharing batches of
    ``batch_size``."""

    def __init__(self, forward: Forward, ref: LayerRef, images: int, batch_size: int) -> None:
        self.forward, self.ref, self.batch_size = forward, ref, batch_size
        self.totals = torch.zeros(images, 0, dtype=torch.float64)
        self.pending: list[torch.Tensor] = []  # views waiting for a full batch
        self.owners: list[int] = []            # which image each pending view belongs to
        self.images = images

    def add(self, index: int, views: torch.Tensor) -> None:
        self.pending.append(views)
        self.owners.extend([index] * views.shape[0])
        while len(self.owners) >= self.batch_size:
            self._run(self.batch_size)

    def flush(self) -> None:
        if self.owners:
            self._run(len(self.owners))

    def _run(self, count: int) -> None:
        batch = torch.cat(self.pending)
        means = filter_means(self.forward, self.ref, batch[:count], None)
        if self.totals.shape[1] == 0:
            self.totals = torch.zeros(self.images, means.shape[1], dtype=torch.float64)
        self.totals.index_add_(0, torch.tensor(self.owners[:count]), means.double())
        self.pending[:] = [batch[count:]] if count < batch.shape[0] else []
        del self.owners[:count]


@checked
def rank_filters(model: LoadedModel, images: ImageSource | torch.Tensor | Sequence[ImageSource | torch.Tensor],
                 layer: str | LayerRef, *, k: int = 10, augment: int = 0, seed: int = 0, fit: str = "crop",
                 batch_size: int = ANALYSIS_BATCH, names: Sequence[str] | None = None, runtime: Runtime | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Ranking:
    """Rank the filters of ``layer`` by mean activation over ``images`` (paper §4.2, Figure 5).

    Args:
        model: The model.
        images: Paths, PIL images or ``(C, H, W)`` tensors in [0, 1] (at least one), or one of them, or an
            ``(N, C, H, W)`` tensor.
        layer: Any accepted layer form.
        k: How many top filters to report (1 to the number of filters).
        augment: Random augmented views per image (resized crops, flips, brightness), averaged into it.
        seed: Seeds the augmentations.
        fit: ``crop`` (the model's evaluation preprocessing), ``squash`` or ``pad``.
        batch_size: Views per forward pass; the views of consecutive images share batches.
        names: Labels for the images (default: file names).
        runtime: Precision and memory format (:mod:`filterscope.runtime`).
        progress: Called as ``progress(images_done, images_total)``.

    Images are decoded and resized by a background thread (Pillow only), in order, while the network runs.
    """
    model = coerce_model(model)
    ref, _ = checked_layer(model, layer, k)
    if not isinstance(images, torch.Tensor):
        images = image_list(images)
    else:  # (N, C, H, W) as fs.reference_crops gives them, or one (C, H, W)
        images = list(images) if images.dim() == 4 else [images]
    if not images:
        raise ImageError("No image given")
    generator = torch.Generator().manual_seed(seed)

    def decode(index: int) -> tuple[str, Image.Image | torch.Tensor, Placement, tuple[int, int]]:
        return decode_image(model, images[index], fit, names[index] if names else None)

    prepared: list[AnalysisImage] = []
    with torch.no_grad(), Forward(model, [ref], runtime) as forward:
        sums = _ViewSums(forward, ref, len(images), batch_size)
        for index, parts in enumerate(prefetch(range(len(images)), decode)):
            item = decoded(*parts)
            views = item.pixels[None]
            if augment > 0:
                views = torch.cat([views, augmentations(item.pixels, augment, generator)])
            prepared.append(item)
            sums.add(index, views)
            if progress is not None:
                progress(index + 1, len(images))
        sums.flush()
    per_image = (sums.totals / (augment + 1)).float()
    return Ranking(model.name, str(ref), k, [p.name for p in prepared], per_image, per_image.mean(dim=0), augment,
                   prepared)
