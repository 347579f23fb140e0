"""What an atlas holds, as plain records: models, layers, renders, exemplars, statistics, progress.

These are what :class:`~filterscope.atlas.store.Atlas` returns and what ``filterscope atlas show --json``
prints (``to_dict``); they hold no database handle.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["ModelRecord", "LayerRecord", "RenderRecord", "ExemplarRecord", "UnitStats", "UnitRecord", "StatusRow",
           "PassRecord"]


def _fields(record: Any) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in fields(record)}


@dataclass(frozen=True)
class ModelRecord:
    id: int
    name: str
    weights: str
    weights_hash: str
    source: str | None
    preprocessing: dict[str, Any]


@dataclass(frozen=True)
class LayerRecord:
    id: int
    model_id: int
    name: str
    channels: int
    shape: list[int]
    receptive_field: dict[str, Any] | None


@dataclass(frozen=True)
class RenderRecord:
    """One optimized image of a unit: what made it, how it went, where its file is (relative to the atlas)."""

    id: int
    unit: int
    objective: str
    recipe_name: str
    recipe: dict[str, Any]
    seed: int
    settings: dict[str, Any]
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


@dataclass(frozen=True)
class UnitStats:
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

    def to_dict(self) -> dict[str, Any]:
        """As plain JSON-ready data (dicts and lists; the nested records are not deep-copied: fast)."""
        return {"model": self.model, "layer": self.layer, "unit": self.unit, "channels": self.channels,
                "renders": [_fields(r) for r in self.renders],
                "exemplars": {kind: [_fields(e) for e in items] for kind, items in self.exemplars.items()},
                "stats": _fields(self.stats) if self.stats is not None else None, "dataset": self.dataset}


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

    @property
    def total(self) -> int:
        return self.done + self.inactive + self.failed + self.pending
