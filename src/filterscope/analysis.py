"""Image-driven analysis: which filters an image drives, and which parts of the image drive them.

* :func:`rank_filters`: the mean activation of every filter of a layer over one or more images
  (optionally with random augmentations), the top k, how stable the top k is across images, and how
  concentrated the response is (the paper's section 4.2 and Figure 5).
* :func:`occlusion_study`: the top k of the original and of occluded variants, filters in common,
  change of activation and rank correlation (the paper's section 4.3 and Table 1).
* :func:`sensitivity_maps`: a patch slid over the image, batched through the truncated network; for
  each filter, the drop of its mean activation mapped back onto the pixels (beyond the paper).

Images enter as paths or PIL images and are put into the network's view with the model's own
preprocessing (``fit="crop"``: resize the shorter side, center crop). Everything runs under
``torch.no_grad``, in batches, through a :class:`~filterscope.runtime.Forward` that stops at the
analysed layer; images are decoded by a background thread while the network works on the previous
batch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from .errors import ChannelError, ImageError, RegionError
from .images import load_image, to_pil, to_tensor
from .layers import LayerRef, layer_info, resolve_layer
from .runtime import Forward, Runtime, prefetch
from .zoo.preprocessing import Placement
from .zoo.registry import LoadedModel, coerce_model

__all__ = [
    "FILLS", "IMAGE_SUFFIXES", "Box", "AnalysisImage", "Concentration", "Ranking", "OcclusionRow",
    "OcclusionStudy", "SensitivityMaps", "prepare_image", "collect_images", "parse_region", "read_regions",
    "layer_means", "concentration", "rank_filters", "occlude", "occlusion_study", "sensitivity_maps",
]

FILLS = ("gray", "black", "mean", "blur", "noise")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


# ----------------------------------------------------------------------------------------- images
@dataclass
class AnalysisImage:
    """One image in the network's view.

    Attributes:
        name: A label (the file name, or what the caller gave).
        pixels: ``(3,S,S)`` float in [0, 1], the network's input before normalization.
        placement: Maps original-image pixels to input pixels.
        original_size: ``(width, height)`` of the original image, which region coordinates refer to.
    """

    name: str
    pixels: torch.Tensor
    placement: Placement
    original_size: tuple[int, int]

    def pil(self) -> Image.Image:
        return to_pil(self.pixels)


def prepare_image(model: LoadedModel, image: str | os.PathLike[str] | Image.Image, *, fit: str = "crop",
                  name: str | None = None) -> AnalysisImage:
    """Load (if a path) and preprocess one image for ``model``; see :class:`AnalysisImage`."""
    return _decoded(*_decode(model, image, fit, name))


def _decode(model: LoadedModel, image: str | os.PathLike[str] | Image.Image, fit: str,
            name: str | None) -> tuple[str, Image.Image, Placement, tuple[int, int]]:
    """The Pillow half of :func:`prepare_image` (it releases the GIL, so it can run in a background
    thread without competing with the network's threads): label, input-sized view, placement, size."""
    if isinstance(image, Image.Image):
        pil, label = image, name or "image"
    else:
        pil, label = load_image(image, min_side=model.preprocessing.resize_size), name or Path(image).name
    original = tuple(pil.info.get("original_size", pil.size))
    view, placement = model.preprocessing.place_image(pil, fit, original_size=original)
    return label, view, placement, original


def _decoded(label: str, view: Image.Image, placement: Placement, original: tuple[int, int]) -> AnalysisImage:
    """The torch half of :func:`prepare_image`."""
    return AnalysisImage(label, to_tensor(view)[0], placement, original)


def collect_images(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files from a list of paths, folders expanded to their images (sorted)."""
    files: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in folder {item}")
            files.extend(found)
        else:
            files.append(item)
    if not files:
        raise ImageError("No image given")
    return files


def _augmentations(pixels: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random views of ``(3,S,S)``: resized crops of 60-100% area, flips, brightness ±10%."""
    size = pixels.shape[-1]
    views = []
    for _ in range(count):
        area = 0.6 + 0.4 * float(torch.rand((), generator=generator))
        side = max(8, int(size * math.sqrt(area)))
        y, x = (int(torch.randint(0, size - side + 1, (), generator=generator)) for _ in range(2))
        view = F.interpolate(pixels[None, :, y:y + side, x:x + side], size=(size, size), mode="bilinear",
                             align_corners=False, antialias=True)[0]
        if float(torch.rand((), generator=generator)) < 0.5:
            view = view.flip(-1)
        view = view * (0.9 + 0.2 * float(torch.rand((), generator=generator)))
        views.append(view.clamp(0, 1))
    return torch.stack(views)


# ------------------------------------------------------------------------------------- activations
def _checked_layer(model: LoadedModel, layer: str | LayerRef, k: int | None = None) -> tuple[LayerRef, int]:
    ref = resolve_layer(model, layer)
    channels = layer_info(model, ref).channels
    if k is not None and not 1 <= k <= channels:
        raise ChannelError(f"k={k} is not possible for layer {ref} of {model.name}, which has {channels} filters "
                           f"(use 1-{channels})")
    return ref, channels


ANALYSIS_BATCH = 4
"""Default images per forward pass of the analyses (benchmarks/analysis_speed.py)."""


def layer_means(model: LoadedModel, layer: str | LayerRef, pixels: torch.Tensor, *,
                filters: Sequence[int] | None = None, batch_size: int = ANALYSIS_BATCH,
                runtime: Runtime | None = None) -> torch.Tensor:
    """Mean activation of every filter (or of ``filters``) for each image of ``(B,3,S,S)`` in [0, 1].

    Returns ``(B, C)`` (or ``(B, len(filters))``), float32 on the CPU. Runs in batches of
    ``batch_size`` under ``no_grad``, stopping the forward pass at ``layer``. Small batches are fastest
    on a CPU, where big ones spill the caches (see benchmarks/RESULTS.md).
    """
    model = coerce_model(model)
    ref = resolve_layer(model, layer)
    with torch.no_grad(), Forward(model, [ref], runtime) as forward:
        return torch.cat([_means(forward, ref, pixels[start:start + batch_size], filters)
                          for start in range(0, pixels.shape[0], batch_size)])


def _means(forward: Forward, ref: LayerRef, batch: torch.Tensor, filters: Sequence[int] | None) -> torch.Tensor:
    model = forward.model
    act = forward(model.preprocessing.normalize(batch.to(model.device)))[ref]
    if filters is not None:
        act = act[:, torch.tensor(list(filters), device=act.device)]
    return act.reshape(*act.shape[:2], -1).mean(dim=2).float().cpu()


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
            (iii); a heuristic, see the README.
    """

    top_k_share: float
    top_to_median: float
    effective_filters: float
    uniform_share: float
    scenario: str


def concentration(means: torch.Tensor, k: int) -> Concentration:
    """:class:`Concentration` of the ``(C,)`` mean activations for the top ``k``."""
    positive = means.clamp(min=0).double()
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
    # Thresholds in units of the uniform share: see "Reading the concentration summary" in the README.
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
        return self.means.argsort(descending=True, stable=True).tolist()

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
        return [row.argsort(descending=True, stable=True)[:self.k].tolist() for row in self.per_image]

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


def rank_filters(model: LoadedModel, images: Sequence[str | os.PathLike[str] | Image.Image], layer: str | LayerRef,
                 *, k: int = 10, augment: int = 0, seed: int = 0, fit: str = "crop", batch_size: int = ANALYSIS_BATCH,
                 names: Sequence[str] | None = None, runtime: Runtime | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Ranking:
    """Rank the filters of ``layer`` by mean activation over ``images`` (paper §4.2, Figure 5).

    Args:
        model: The model.
        images: Paths or PIL images (at least one).
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
    ref, _ = _checked_layer(model, layer, k)
    if not images:
        raise ImageError("No image given")
    generator = torch.Generator().manual_seed(seed)

    def decode(index: int) -> tuple[str, Image.Image, Placement, tuple[int, int]]:
        return _decode(model, images[index], fit, names[index] if names else None)

    prepared: list[AnalysisImage] = []
    sums = torch.zeros(len(images), 0)
    pending: list[torch.Tensor] = []  # views waiting for a full batch
    owners: list[int] = []            # which image each pending view belongs to
    with torch.no_grad(), Forward(model, [ref], runtime) as forward:

        def run(count: int) -> None:
            nonlocal sums
            batch = torch.cat(pending)
            means = _means(forward, ref, batch[:count], None)
            if sums.shape[1] == 0:
                sums = torch.zeros(len(images), means.shape[1], dtype=torch.float64)
            sums.index_add_(0, torch.tensor(owners[:count]), means.double())
            pending[:] = [batch[count:]] if count < batch.shape[0] else []
            del owners[:count]

        for index, decoded in enumerate(prefetch(range(len(images)), decode)):
            item = _decoded(*decoded)
            views = item.pixels[None]
            if augment > 0:
                views = torch.cat([views, _augmentations(item.pixels, augment, generator)])
            prepared.append(item)
            pending.append(views)
            owners.extend([index] * views.shape[0])
            while len(owners) >= batch_size:
                run(batch_size)
            if progress is not None:
                progress(index + 1, len(images))
        if owners:
            run(len(owners))
    per_image = (sums / (augment + 1)).float()
    return Ranking(model.name, str(ref), k, [p.name for p in prepared], per_image, per_image.mean(dim=0), augment,
                   prepared)


# ----------------------------------------------------------------------------------------- regions
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class Box:
    """A rectangle ``x0, y0, x1, y1`` in original-image pixels, or in percent of the size when ``relative``."""

    x0: float
    y0: float
    x1: float
    y1: float
    relative: bool = False

    @classmethod
    def parse(cls, text: str) -> Box:
        parts = text.split(",")
        if len(parts) != 4:
            raise RegionError(f"Bad box {text!r}: expected x0,y0,x1,y1 (pixels, or percentages like 10%,20%,60%,80%)")
        matches = [_NUMBER.match(p) for p in parts]
        if not all(matches):
            raise RegionError(f"Bad box {text!r}: coordinates must be numbers, optionally with a % suffix")
        percent = {m.group(2) for m in matches}
        if len(percent) != 1:
            raise RegionError(f"Bad box {text!r}: use pixels or percentages for all four coordinates, not both")
        return cls(*(float(m.group(1)) for m in matches), relative=percent == {"%"})

    def pixels(self, size: tuple[int, int], name: str = "region") -> tuple[float, float, float, float]:
        """The box in pixels of an image of ``size`` (width, height), checked to lie inside it."""
        w, h = size
        x0, y0, x1, y1 = self.x0, self.y0, self.x1, self.y1
        if self.relative:
            x0, x1, y0, y1 = x0 * w / 100, x1 * w / 100, y0 * h / 100, y1 * h / 100
        if x1 <= x0 or y1 <= y0:
            raise RegionError(f"Region {name!r} has zero area ({self}): x1 must exceed x0 and y1 exceed y0")
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise RegionError(f"Region {name!r} ({self}) is outside the {w}x{h} image")
        return x0, y0, x1, y1

    def __str__(self) -> str:
        unit = "%" if self.relative else ""
        return ",".join(f"{v:g}{unit}" for v in (self.x0, self.y0, self.x1, self.y1))


def parse_region(spec: str) -> tuple[str, list[Box]]:
    """``"face=10,20,110,90"``; several boxes joined with ``+`` form one variant."""
    name, sep, boxes = spec.partition("=")
    name = name.strip()
    if not sep or not name or not boxes.strip():
        raise RegionError(f"Bad region {spec!r}: expected NAME=x0,y0,x1,y1 (boxes joined with +)")
    return name, [Box.parse(b) for b in boxes.split("+")]


def read_regions(path: str | os.PathLike[str]) -> dict[str, list[Box]]:
    """Named variants from JSON (``{"face": [[x0,y0,x1,y1], ...]}``) or CSV (``name,x0,y0,x1,y1`` rows).

    Coordinates may be numbers or strings with a ``%`` suffix; rows or lists with the same name form one
    variant of several boxes.
    """
    path = Path(path)
    if not path.is_file():
        raise RegionError(f"Regions file not found: {path}")
    variants: dict[str, list[Box]] = {}
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise RegionError(f"{path}: expected a JSON object of name → list of boxes")
            for name, boxes in data.items():
                if boxes and not isinstance(boxes[0], list):
                    boxes = [boxes]
                variants[str(name)] = [Box.parse(",".join(str(v) for v in box)) for box in boxes]
        else:
            with path.open(newline="") as handle:
                for line, row in enumerate(csv.reader(handle), start=1):
                    if not row or row[0].strip().lower() in ("name", "") or row[0].startswith("#"):
                        continue
                    if len(row) != 5:
                        raise RegionError(f"{path}:{line}: expected name,x0,y0,x1,y1")
                    variants.setdefault(row[0].strip(), []).append(Box.parse(",".join(row[1:])))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegionError(f"Cannot read regions file {path}: {exc}") from None
    if not variants:
        raise RegionError(f"Regions file {path} names no region")
    return variants


# --------------------------------------------------------------------------------------- occlusion
def _gaussian_blur(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=pixels.dtype)
    kernel = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).to(pixels.device)
    batch = pixels.reshape(-1, 1, *pixels.shape[-2:])
    padded = F.pad(batch, (radius, radius, 0, 0), mode="replicate")
    batch = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    padded = F.pad(batch, (0, 0, radius, radius), mode="replicate")
    batch = F.conv2d(padded, kernel.view(1, 1, -1, 1))
    return batch.reshape(pixels.shape)


def fill_image(pixels: torch.Tensor, fill: str, seed: int = 0) -> torch.Tensor:
    """What occluded pixels are replaced with: ``(3,S,S)`` for one of :data:`FILLS`."""
    if fill == "gray":
        return torch.full_like(pixels, 0.5)
    if fill == "black":
        return torch.zeros_like(pixels)
    if fill == "mean":
        return pixels.mean(dim=(-2, -1), keepdim=True).expand_as(pixels).clone()
    if fill == "blur":
        return _gaussian_blur(pixels, sigma=pixels.shape[-1] / 20)
    if fill == "noise":
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(pixels.shape, generator=generator).to(pixels)
    raise RegionError(f"Unknown fill {fill!r}: use one of {', '.join(FILLS)}")


def occlude(image: AnalysisImage, boxes: Sequence[Box], *, fill: str = "gray", seed: int = 0,
            name: str = "region") -> tuple[torch.Tensor, float]:
    """``image`` with ``boxes`` (original-image coordinates) filled; also the occluded share of the input."""
    replacement = fill_image(image.pixels, fill, seed)
    mask = torch.zeros(image.pixels.shape[-2:], dtype=torch.bool)
    for box in boxes:
        x0, y0, x1, y1 = image.placement.box_to_input(box.pixels(image.original_size, name))
        mask[y0:y1, x0:x1] = True
    return torch.where(mask, replacement, image.pixels), float(mask.float().mean())


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float((ra.norm() * rb.norm()))
    return float((ra * rb).sum()) / denominator if denominator else 1.0


@dataclass(frozen=True)
class OcclusionRow:
    """One line of the paper's Table 1.

    Attributes:
        name: The variant ("original", or its region names).
        top: Its k most active filters, strongest first.
        common: How many of them are in the original's top k.
        mean_change: Relative change of the mean activation of the original's top k, e.g. -0.12 = -12%.
        rank_correlation: Spearman correlation of all filters' mean activations with the original's.
        occluded_share: Share of the network's input that the regions cover (0 when they fall outside the crop).
    """

    name: str
    top: list[int]
    common: int
    mean_change: float
    rank_correlation: float
    occluded_share: float


@dataclass
class OcclusionStudy:
    """The occlusion table (paper Table 1) with the images it was computed on."""

    model_name: str
    layer: str
    image_name: str
    k: int
    fill: str
    rows: list[OcclusionRow]
    images: list[torch.Tensor] = field(repr=False)
    means: torch.Tensor = field(repr=False)

    def table(self) -> list[list[str]]:
        header = ["image", f"top {self.k} filters", "# common", "mean change", "rank corr.", "occluded"]
        body = [[r.name, "[" + ", ".join(map(str, r.top)) + "]", f"{r.common}/{self.k}",
                 f"{100 * r.mean_change:+.1f}%", f"{r.rank_correlation:.3f}", f"{100 * r.occluded_share:.0f}%"]
                for r in self.rows]
        return [header, *body]

    def markdown(self) -> str:
        header, *body = self.table()
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        table = self.table()
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table) + "\n"

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["image", "top", "common", "k", "mean_change", "rank_correlation", "occluded_share"])
        for r in self.rows:
            writer.writerow([r.name, " ".join(map(str, r.top)), r.common, self.k, f"{r.mean_change:.6f}",
                             f"{r.rank_correlation:.6f}", f"{r.occluded_share:.6f}"])
        return buffer.getvalue()


def occlusion_study(model: LoadedModel, image: str | os.PathLike[str] | Image.Image | AnalysisImage,
                    layer: str | LayerRef, variants: Mapping[str, Sequence[Box]], *, k: int = 10,
                    fill: str = "gray", seed: int = 0, fit: str = "crop",
                    runtime: Runtime | None = None) -> OcclusionStudy:
    """The paper's Table 1: top-k filters of the original and of each occluded variant.

    Args:
        model: The model.
        image: Path, PIL image or :class:`AnalysisImage`.
        layer: Any accepted layer form.
        variants: Name → boxes occluded together (original-image coordinates, see :class:`Box`).
        k: Filters per row.
        fill: One of :data:`FILLS`.
        seed: Seeds the noise fill.
        fit: How the image is fitted to the input (see :meth:`Preprocessing.place`).
        runtime: Precision and memory format (:mod:`filterscope.runtime`).

    Raises:
        RegionError: a malformed, empty or out-of-image region, or an unknown fill.
    """
    model = coerce_model(model)
    ref, _ = _checked_layer(model, layer, k)
    if fill not in FILLS:
        raise RegionError(f"Unknown fill {fill!r}: use one of {', '.join(FILLS)}")
    item = image if isinstance(image, AnalysisImage) else prepare_image(model, image, fit=fit)
    names, images, shares = ["original"], [item.pixels], [0.0]
    for name, boxes in variants.items():
        pixels, share = occlude(item, boxes, fill=fill, seed=seed, name=name)
        names.append(name)
        images.append(pixels)
        shares.append(share)
    means = layer_means(model, ref, torch.stack(images), runtime=runtime)
    base = means[0]
    base_top = base.argsort(descending=True, stable=True)[:k]
    base_level = float(base[base_top].mean())
    rows = []
    for name, values, share in zip(names, means, shares):
        top = values.argsort(descending=True, stable=True)[:k]
        common = len(set(top.tolist()) & set(base_top.tolist()))
        change = (float(values[base_top].mean()) - base_level) / abs(base_level) if base_level else 0.0
        rows.append(OcclusionRow(name, top.tolist(), common, change, _spearman(base, values), share))
    return OcclusionStudy(model.name, str(ref), item.name, k, fill, rows, images, means)


# ------------------------------------------------------------------------------------ sensitivity
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


def sensitivity_maps(model: LoadedModel, image: str | os.PathLike[str] | Image.Image | AnalysisImage,
                     layer: str | LayerRef, filters: Sequence[int], *, patch: int = 32, stride: int = 8,
                     fill: str = "gray", seed: int = 0, batch_size: int = ANALYSIS_BATCH, fit: str = "crop",
                     runtime: Runtime | None = None,
                     progress: Callable[[int, int], None] | None = None) -> SensitivityMaps:
    """Slide a ``patch`` x ``patch`` occluder over the image with ``stride`` and map each filter's drop.

    All occluded copies go through the network in batches of ``batch_size``, stopping at ``layer``.
    They are built in this thread: building them (torch copies) in a background thread competes with
    the network's threads and was measured 1.3-2x slower. ``progress(done, total)`` is called after each batch.
    """
    model = coerce_model(model)
    ref, channels = _checked_layer(model, layer)
    for f in filters:
        if not 0 <= f < channels:
            raise ChannelError(f"Filter {f} is out of range for layer {ref} of {model.name}, which has "
                               f"{channels} filters (0-{channels - 1})")
    if batch_size < 1:
        raise RegionError(f"batch_size must be at least 1 (got {batch_size})")
    item = image if isinstance(image, AnalysisImage) else prepare_image(model, image, fit=fit)
    size = item.pixels.shape[-1]
    if not 1 <= patch <= size or stride < 1:
        raise RegionError(f"Patch must be 1-{size} px and stride at least 1 (got patch {patch}, stride {stride})")
    replacement = fill_image(item.pixels, fill, seed)
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)  # the last row and column reach the border
    positions = [(y, x) for y in starts for x in starts]
    chunks = [positions[start:start + batch_size] for start in range(0, len(positions), batch_size)]

    def occluded(chunk: list[tuple[int, int]]) -> torch.Tensor:
        batch = item.pixels.expand(len(chunk), -1, -1, -1).clone()
        for i, (y, x) in enumerate(chunk):
            batch[i, :, y:y + patch, x:x + patch] = replacement[:, y:y + patch, x:x + patch]
        return batch

    drops = torch.zeros(len(filters), size, size, dtype=torch.float64)
    counts = torch.zeros(size, size, dtype=torch.float64)
    done = 0
    with torch.no_grad(), Forward(model, [ref], runtime) as forward:
        baseline = _means(forward, ref, item.pixels[None], filters)[0]
        for chunk in chunks:
            values = _means(forward, ref, occluded(chunk), filters)
            for i, (y, x) in enumerate(chunk):
                drops[:, y:y + patch, x:x + patch] += (baseline - values[i]).double()[:, None, None]
                counts[y:y + patch, x:x + patch] += 1
            done += len(chunk)
            if progress is not None:
                progress(done, len(positions))
    maps = (drops / counts.clamp(min=1)).float()
    return SensitivityMaps(list(filters), maps, baseline, item, patch, stride, fill)
