"""What an atlas holds and what is left, in one record: renders per layer, recipe and seed; exemplar passes;
activation atlases; and, per layer, what each registered stage says it holds (circuits, trust, concepts, ...).

``filterscope atlas status`` prints it; :meth:`filterscope.Atlas.status` returns it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .records import StatusRow
from .stages import stage_order
from .store import AtlasStore

__all__ = ["AtlasStatus", "PassStatus", "MapStatus", "StageStatus", "atlas_status"]


@dataclass(frozen=True)
class PassStatus:
    """An exemplar pass of a layer: its dataset, images, state and how many units have their crops."""

    model: str
    layer: str
    dataset: str
    images: int
    status: str
    units_with_crops: int
    units: int


@dataclass(frozen=True)
class MapStatus:
    """An activation atlas of a layer: its grid, positions, class, cells and icons (rendered, failed)."""

    model: str
    layer: str
    grid: int
    positions: str
    label_class: int | None
    cells: int
    icons: int
    failed_icons: int
    trustworthiness: float | None


@dataclass(frozen=True)
class StageStatus:
    """What the atlas holds of a stage's work for a layer, in words (:meth:`~.stages.Stage.recorded`): the units
    with a circuit or a trust record, a concept dictionary."""

    model: str
    layer: str
    stage: str
    text: str


@dataclass(frozen=True)
class AtlasStatus:
    """Everything :func:`atlas_status` reads: the schema version and one row per render group, pass, map and
    unit-level stage of a layer."""

    schema: int
    renders: list[StatusRow]
    passes: list[PassStatus]
    maps: list[MapStatus]
    stages: list[StageStatus]

    @property
    def renders_left(self) -> int:
        return sum(r.pending for r in self.renders)

    def to_dict(self) -> dict[str, object]:
        return {"schema": self.schema, "renders": [{**asdict(r), "total": r.total} for r in self.renders],
                "passes": [asdict(p) for p in self.passes],
                "maps": [_map_dict(m) for m in self.maps],
                "stages": [asdict(s) for s in self.stages]}


def _map_dict(status: MapStatus) -> dict[str, object]:
    row = asdict(status)
    row["class"] = row.pop("label_class")
    return row


def atlas_status(store: AtlasStore) -> AtlasStatus:
    """The status of the atlas open in ``store``, read in one snapshot."""
    passes, maps, stages = [], [], []
    with store.snapshot():
        for model in store.models():
            for layer in store.layers(model.id):
                for run in store.passes(layer.id):
                    crops = store.crops_done(run.id) if run.status == "done" else 0
                    passes.append(PassStatus(model.name, layer.name, run.dataset_source, run.images, run.status,
                                             crops, layer.channels))
                for found in store.maps_of_layer(layer.id):
                    cells = store.map_cells(found.id)
                    maps.append(MapStatus(model.name, layer.name, found.settings.grid, found.settings.positions,
                                          found.settings.label_class, len(cells),
                                          sum(c.file is not None for c in cells),
                                          sum(c.status == "failed" and c.file is None for c in cells),
                                          found.trustworthiness))
                for stage in stage_order():
                    text = stage.recorded(store, layer)
                    if text is not None:
                        stages.append(StageStatus(model.name, layer.name, stage.name, text))
        return AtlasStatus(store.schema_version, store.status(), passes, maps, stages)
