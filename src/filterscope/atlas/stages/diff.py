"""The diff stage of an atlas build: each built layer of the atlas's network against another network (or another
checkpoint of it) over the exemplar pass's images (:mod:`filterscope.compare`).

Asked for with ``build_atlas(..., stages=[DiffSettings(model=...)])`` (``atlas build --diff-with MODEL``). For
each layer with a finished pass of at least :data:`~filterscope.compare.diff.MIN_IMAGES` images and no diff of
these settings, a :class:`DiffTask` holds the pass's image paths and the settings; its function,
:func:`diff_task`, loads the other network (by its spec and weights, so that a worker elsewhere can too) and runs
:func:`~filterscope.diff` over the images: CKA of every numbered block of both networks, the built layer matched
with its namesake in the other network (else the block at the same relative depth), and with ``concepts`` a
crosscoder of the pair. :meth:`DiffStage.record` writes the report in one transaction; a build never redoes a
finished diff.

The stage keeps its own table (created by the build before it runs; an atlas that never ran it has none):
``model_diffs`` (one per layer and settings: the other network, the report as JSON). Its reads are
:func:`model_diffs` and :func:`diff_count`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ...compare import ModelDiff, default_layers, diff
from ...compare.diff import MIN_IMAGES
from ...errors import InvalidOptionError, UnknownLayerError
from ...layers import resolve_layer
from ...zoo import load_model
from ...zoo.model import LoadedModel
from ..records import LayerRecord
from ..schema import now
from ..store import AtlasStore
from ..tasks import Report, TaskFailure, worker_name
from .base import BuildContext, BuildRequest, Recorded, Stage, has_table, register_stage

__all__ = ["DiffSettings", "DiffTask", "DiffOutcome", "diff_task", "DiffStage", "model_diffs", "diff_count"]


@dataclass(frozen=True)
class DiffSettings:
    """Diff each built layer against ``model`` (any spec ``load_model`` takes) with ``weights`` (``None``: its
    own), over at most ``images`` of the pass's images (the first ones); ``concepts``: a crosscoder of that many
    concepts too; ``seed`` (random weights, the matching's null, the crosscoder)."""

    model: str
    weights: str | None = None
    concepts: int | None = None
    images: int = 800
    seed: int = 0

    def __post_init__(self) -> None:
        if self.images < MIN_IMAGES or (self.concepts is not None and self.concepts < 2):
            raise InvalidOptionError(f"diff: images must be at least {MIN_IMAGES} and concepts at least 2 (got "
                                     f"{self.images}, {self.concepts})")

    @property
    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class DiffTask:
    """Diff ``layer`` against the settings' network over the pass ``pass_id``'s images ``paths``."""

    layer: str
    layer_id: int
    pass_id: int
    paths: tuple[str, ...]
    settings: DiffSettings


@dataclass(frozen=True)
class DiffOutcome:
    report: ModelDiff
    worker: str = "local"


def partner(model: LoadedModel, other: LoadedModel, layer: str) -> str:
    """The layer of ``other`` a built layer is matched with: its namesake, else the numbered block at the same
    relative depth."""
    try:
        return str(resolve_layer(other, layer))
    except UnknownLayerError:
        pass
    mine, theirs = default_layers(model, count=10_000), default_layers(other, count=10_000)
    if layer not in mine or not theirs:
        raise InvalidOptionError(f"diff: {other.name} has no layer {layer!r} and no numbered block at its depth")
    return theirs[round(mine.index(layer) / max(len(mine) - 1, 1) * (len(theirs) - 1))]


def diff_task(model: LoadedModel, task: DiffTask, report: Report | None = None) -> DiffOutcome:
    """Do a :class:`DiffTask` (nothing is written; see the module docstring)."""
    settings = task.settings
    other = load_model(settings.model, settings.weights, seed=settings.seed, device=str(model.device))
    found = diff(model, other, list(task.paths[:settings.images]), pairs=[(task.layer, partner(model, other,
                                                                                               task.layer))],
                 concepts=settings.concepts, seed=settings.seed)
    if report is not None:
        report(task.layer)
    return DiffOutcome(found, worker_name())


TABLES = (
    "CREATE TABLE IF NOT EXISTS model_diffs (id INTEGER PRIMARY KEY, layer_id INTEGER NOT NULL REFERENCES "
    "layers(id), pass_id INTEGER NOT NULL, key TEXT NOT NULL, other TEXT NOT NULL, report TEXT NOT NULL, "
    "finished TEXT NOT NULL, UNIQUE (layer_id, key))",)


def model_diffs(store: AtlasStore, layer_id: int, limit: int | None = None) -> list[ModelDiff]:
    """The layer's diffs, newest first, at most ``limit`` of them (none in an atlas that never ran the stage)."""
    with store.records() as conn:
        if not has_table(conn, "model_diffs"):
            return []
        rows = conn.execute("SELECT report FROM model_diffs WHERE layer_id = ? ORDER BY id DESC LIMIT ?",
                            (layer_id, -1 if limit is None else limit)).fetchall()
    return [ModelDiff.from_dict(json.loads(r["report"])) for r in rows]


def diff_count(store: AtlasStore, layer_id: int) -> int:
    """How many diffs the layer has (without reading them)."""
    with store.records() as conn:
        if not has_table(conn, "model_diffs"):
            return 0
        return int(conn.execute("SELECT COUNT(*) FROM model_diffs WHERE layer_id = ?", (layer_id,)).fetchone()[0])


@register_stage
class DiffStage(Stage[DiffTask, DiffOutcome]):
    """A diff of each built layer against another network (see the module docstring), after its exemplar pass."""

    name = "diff"
    after = ("exemplars", "crops", "renders")
    counts = "layer"
    redone = "diff(s) to compute again"
    tables = TABLES
    run = staticmethod(diff_task)

    def wanted(self, request: BuildRequest) -> bool:
        return request.option(DiffSettings) is not None and request.dataset is not None

    def plan(self, context: BuildContext) -> Sequence[DiffTask]:
        settings = context.request.option(DiffSettings)
        assert settings is not None  # wanted() said so
        return [DiffTask(str(layer.ref), layer.id, pass_id, tuple(paths), settings)
                for layer, pass_id, paths in context.passes_without("model_diffs", settings.key, MIN_IMAGES, "diff",
                                                                    "a diff")]

    def record(self, context: BuildContext, task: DiffTask, outcome: DiffOutcome | TaskFailure) -> Recorded:
        if isinstance(outcome, TaskFailure):
            return Recorded(failed=(f"{task.layer}: {outcome.message}",))
        found = outcome.report
        with context.store.transaction() as conn:
            _write(conn, task, found)
        match = found.matches[0]
        return Recorded(1, message=f"diff: {task.layer} against {found.model_b}: {match.share:.0%} of its units "
                                   f"matched in {match.layer_b}, in {found.seconds:.0f} s on {outcome.worker}")

    def recorded(self, store: AtlasStore, layer: LayerRecord) -> str | None:
        found = model_diffs(store, layer.id)
        if not found:
            return None
        match = found[0].matches[0]
        return (f"{len(found)} diff(s); the newest against {found[0].model_b}: {match.share:.0%} of the units "
                f"matched in {match.layer_b}")


def _write(conn: sqlite3.Connection, task: DiffTask, found: ModelDiff) -> None:
    conn.execute("INSERT INTO model_diffs (layer_id, pass_id, key, other, report, finished) VALUES (?, ?, ?, ?, ?, ?)",
                 (task.layer_id, task.pass_id, task.settings.key, found.model_b, found.to_json(), now()))
