"""What an atlas holds, as typed records: what the store's read side returns and what its write side takes.

Read side (:mod:`.reads`): models, layers, renders, exemplars, statistics, units, layer grids, progress.
Write side (:mod:`.writes`): a planned render, a finished render, a pass's statistics and exemplars, crops,
a layer pair's expanded weights and a unit's circuit sections.
They hold no database handle; ``to_dict`` gives what ``filterscope atlas show --json`` and the microscope's
JSON API print, as ``dict[str, object]``: plain JSON data, read only after its type is checked (the records are
what code reads; the dicts are only written out).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..analysis.receptive_field import ReceptiveField
from ..display import html_png, html_table, png_strip
from ..engine.identity import RenderSettings
from ..engine.recipes import Recipe
from ..images import load_image
from ..zoo.preprocessing import Preprocessing
from ..zoo.weights import WeightsSource
from .sections import Section

__all__ = ["ModelRecord", "LayerRecord", "RenderRecord", "ExemplarRecord", "UnitStats", "UnitRecord", "StatusRow",
           "PassRecord", "UnitSummary", "PlannedRender", "RenderJob", "FinishedRender", "NewExemplar", "UnitPassStats",
           "CropJob", "Crop", "CircuitPair", "CircuitSection", "FINISHED"]

FINISHED = ("ok", "inactive", "not-improved")
"""The statuses of a render that ran to the end and has an image (``not-improved``: its objective did not rise, a
failed visualization that is still shown, marked)."""

def _fields(record: Any) -> dict[str, object]:
    """A record's fields as they are (shallow: fast; records whose fields are typed values convert those)."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


# --------------------------------------------------------------------------------------- read side
@dataclass(frozen=True)
class ModelRecord:
    """A model of the atlas: its name, weights (where from, and their fingerprint), the source spec of a
    model outside the registry, and its preprocessing."""

    id: int
    name: str
    weights: WeightsSource
    weights_hash: str
    source: str | None
    preprocessing: Preprocessing


@dataclass(frozen=True)
class LayerRecord:
    id: int
    model_id: int
    name: str
    channels: int
    shape: list[int]
    receptive_field: ReceptiveField | None


@dataclass(frozen=True)
class RenderRecord:
    """One optimized image of a unit: what made it, how it went, where its file is (relative to the atlas)."""

    id: int
    unit: int
    objective: str
    recipe_name: str
    recipe: Recipe
    seed: int
    settings: RenderSettings
    status: str
    initial_activation: float | None
    final_activation: float | None
    activation_ratio: float | None
    robustness: float | None
    high_frequency_share: float | None
    file: str | None
    array_file: str | None
    seconds: float | None
    message: str | None

    def to_dict(self) -> dict[str, object]:
        return {**_fields(self), "recipe": self.recipe.to_dict(), "settings": self.settings.to_dict()}


@dataclass(frozen=True)
class ExemplarRecord:
    """A dataset image that drives a unit (``kind``: ``max``, ``mean`` or ``min``), its rank (0 = best),
    value, the position of the maximum (minimum for ``min``) in the layer's grid, the receptive-field box
    around it in input pixels and in the original image's pixels, and whether a crop is stored."""

    id: int
    kind: str
    rank: int
    image: int
    path: str
    value: float
    y: int
    x: int
    box: list[int]
    source_box: list[float]
    has_crop: bool

    def to_dict(self) -> dict[str, object]:
        return _fields(self)


@dataclass(frozen=True)
class UnitStats:
    """A unit over a pass's dataset: mean and standard deviation over all positions of all images, maximum,
    minimum, the fraction of images where it is above 0 somewhere, how many images counted, and the
    histogram of its per-image maxima (``edges``, ``counts``)."""

    mean: float
    std: float
    max: float
    min: float
    fraction_positive: float
    images: int
    histogram: dict[str, list[float]]


@dataclass(frozen=True)
class PassRecord:
    id: int
    layer_id: int
    dataset_id: int
    dataset_source: str
    images: int
    exemplars: int
    status: str
    seconds: float | None


@dataclass(frozen=True)
class UnitRecord:
    """Everything the atlas knows about one unit."""

    model: str
    layer: str
    unit: int
    channels: int
    renders: list[RenderRecord] = field(default_factory=list)
    exemplars: dict[str, list[ExemplarRecord]] = field(default_factory=dict)
    stats: UnitStats | None = None
    dataset: str | None = None
    folder: Path | None = field(default=None, compare=False, repr=False)
    """The atlas folder the record was read from (its render files are relative to it)."""

    def _repr_html_(self) -> str:
        """In a notebook: the unit's renders, a table of them, its statistics and its top exemplars."""
        folder = self.folder
        files = [folder / r.file for r in self.renders if folder and r.file and (folder / r.file).is_file()]
        pictures = html_png(png_strip([load_image(f) for f in files])) if files else ""
        renders = html_table(f"{self.model} {self.layer} unit {self.unit}: renders",
                             ("recipe", "seed", "status", "activation", "robustness"),
                             [(r.recipe_name, r.seed, r.status, _number(r.final_activation), _number(r.robustness))
                              for r in self.renders])
        stats = "" if self.stats is None else html_table(
            f"over {self.stats.images} images of {self.dataset}", ("mean", "std", "max", "min", "fraction > 0"),
            [tuple(_number(v) for v in (self.stats.mean, self.stats.std, self.stats.max, self.stats.min,
                                        self.stats.fraction_positive))])
        top = html_table("top exemplars by maximum", ("rank", "activation", "image"),
                         [(e.rank, _number(e.value), e.path) for e in self.exemplars.get("max", [])])
        return pictures + renders + stats + top

    def to_dict(self) -> dict[str, object]:
        """As plain JSON-ready data (dicts and lists)."""
        return {"model": self.model, "layer": self.layer, "unit": self.unit, "channels": self.channels,
                "renders": [r.to_dict() for r in self.renders],
                "exemplars": {kind: [e.to_dict() for e in items] for kind, items in self.exemplars.items()},
                "stats": _fields(self.stats) if self.stats is not None else None, "dataset": self.dataset}


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


@dataclass
class UnitSummary:
    """One unit in a layer's grid: its first finished render (id, status, final activation, robustness), its
    statistics from the latest pass (maximum, fraction of images above 0) and its top exemplar with a crop."""

    unit: int
    render: int | None = None
    status: str | None = None
    final_activation: float | None = None
    robustness: float | None = None
    max: float | None = None
    fraction_positive: float | None = None
    exemplar: int | None = None

    def to_dict(self) -> dict[str, object]:
        return _fields(self)


@dataclass(frozen=True)
class StatusRow:
    """Renders of one layer with one recipe and seed: how many are done, failed, still to do."""

    model: str
    layer: str
    recipe: str
    seed: int
    done: int
    inactive: int
    failed: int
    pending: int
    not_improved: int = 0

    @property
    def total(self) -> int:
        return self.done + self.inactive + self.not_improved + self.failed + self.pending


# -------------------------------------------------------------------------------------- write side
@dataclass(frozen=True)
class PlannedRender:
    """A render a build wants, recorded as ``pending`` unless the atlas has its key already
    (:class:`~filterscope.identity.RenderIdentity`)."""

    layer_id: int
    unit: int
    objective: str
    recipe_name: str
    recipe: str  # the recipe's JSON, as in the key
    seed: int
    settings: RenderSettings
    key: str


@dataclass(frozen=True)
class RenderJob:
    """A planned render still to do: its row id, unit and key."""

    id: int
    unit: int
    key: str


@dataclass(frozen=True)
class FinishedRender:
    """What a finished render records (its files already written; ``status``: ok, inactive or failed)."""

    id: int
    unit: int
    status: str
    initial_activation: float | None = None
    final_activation: float | None = None
    activation_ratio: float | None = None
    robustness: float | None = None
    high_frequency_share: float | None = None
    seconds: float | None = None
    message: str | None = None
    file: str | None = None
    array_file: str | None = None


@dataclass(frozen=True)
class UnitPassStats:
    """A unit's statistics from a finished pass, with the units it fires with (``(unit, correlation)``)."""

    unit: int
    stats: UnitStats
    cofiring: list[tuple[int, float]]


@dataclass(frozen=True)
class NewExemplar:
    """An exemplar found by a pass (see :class:`ExemplarRecord`), before it has an id or a crop."""

    unit: int
    kind: str
    rank: int
    image: int
    value: float
    y: int
    x: int
    box: list[int]
    source_box: list[float]


@dataclass(frozen=True)
class CropJob:
    """An exemplar without a crop yet: its id, unit, dataset image path and box in input pixels."""

    id: int
    unit: int
    path: str
    box: list[int]


@dataclass(frozen=True)
class Crop:
    """An exemplar's crop and thumbnail (JPEG bytes)."""

    id: int
    crop: bytes
    thumbnail: bytes


@dataclass(frozen=True)
class CircuitPair:
    """The expanded weights from layer ``source_layer_id`` to ``target_layer_id``: kernel ``(kh, kw)``, the
    ``.npy`` file (relative to the atlas) of the ``(C_B, C_A, kh, kw)`` array, and its SHA-256."""

    source_layer_id: int
    target_layer_id: int
    kernel: tuple[int, int]
    file: str
    sha256: str
    seconds: float


@dataclass(frozen=True)
class CircuitSection:
    """One section of a unit's circuit (:mod:`.sections`): ``inputs`` (from the previous built layer: expanded
    weights, attribution, the ablation check), ``outputs`` (into the next built layer) or ``classes`` (promoted
    and suppressed)."""

    layer_id: int
    unit: int
    data: Section

    @property
    def section(self) -> str:
        return self.data.kind
