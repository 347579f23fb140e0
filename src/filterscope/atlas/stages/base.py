"""A kind of atlas work as a type: :class:`Stage`, the build's context, its progress and its summary.

A stage is planned, run and recorded the same way whatever it does: :meth:`Stage.plan` reads the atlas and
gives frozen tasks; the executor maps the stage's module-level task function ``run(model, task, report)``
over them (here or on a Dask worker); :meth:`Stage.record` writes each outcome (or
:class:`~filterscope.atlas.tasks.TaskFailure`) to the atlas and says what it did as a :class:`Recorded`. The
loop (:meth:`Stage.execute`) tells the progress and counts the results in the stage's :class:`StageReport`;
a failed task is recorded with its message, reported, and counted, never dropped; a stage that cannot go on
without every task (``stops``: the exemplar pass) raises instead. A stage whose work is not a plain map over
tasks (the checkpointed exemplar pass) overrides :meth:`~Stage.execute` and keeps the rest.

For ``atlas check``, a stage names the files its records point at (:meth:`Stage.files`) and how a repair
invalidates a damaged one (:meth:`Stage.invalidate`), so :mod:`~filterscope.atlas.check` needs no list of its
own.

Stages are registered in :data:`STAGES` (``@register_stage``, as timm's ``register_model``) and run in the
order their ``after`` names give (:func:`stage_order`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ...engine.recipes import Recipe
from ...engine.results import StepInfo
from ...errors import AtlasError
from ...layers import LayerRef
from ...maps.settings import MapSettings
from ...registry import Registry
from ...runtime.core import Runtime
from ...zoo.model import LoadedModel
from ..dataset import Dataset
from ..executors import Executor
from ..records import LayerRecord
from ..store import AtlasStore
from ..tasks import TaskFailure

if TYPE_CHECKING:
    import torch

__all__ = ["Stage", "StageReport", "Recorded", "BuildProgress", "BuildSummary", "BuildRequest", "BuildContext",
           "LayerPlan", "NamedFile", "STAGES", "register_stage", "stage_order", "has_table"]

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")


class BuildProgress:
    """What a build reports, as it goes; the default does nothing (the CLI draws progress bars).

    Three calls cover every stage: a line for the user, how far a stage is, and (within a render task) each
    step of the optimization.
    """

    def message(self, text: str, *, warning: bool = False) -> None:
        """A line for the user; ``warning``: something failed (shown even when quiet)."""

    def stage(self, name: str, done: int, total: int, note: str = "") -> None:
        """Stage ``name`` has done ``done`` of ``total`` (images, units, icons: the stage's own count);
        ``note``: a short state (the render step, units per worker)."""

    def step(self, info: StepInfo) -> None:
        """One optimization step of a render task (see :func:`~filterscope.render.iter_render`)."""


@dataclass
class StageReport:
    """What one stage did in a build.

    Attributes:
        done: Records this build wrote (renders, passes, crops, unit circuits, trust records, maps, icons).
        already: Wanted records the atlas already held (not redone).
        failed: Each failure, ``"WHAT: MESSAGE"``, recorded as failed (or left for the next build to redo).
        flagged: Records written but marked (a render whose objective did not rise).
        seconds: The stage's wall time.
        per_second: Its rate, where it has one (the exemplar pass's images per second).
    """

    done: int = 0
    already: int = 0
    failed: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    seconds: float = 0.0
    per_second: float = 0.0

    def add(self, recorded: Recorded) -> None:
        self.done += recorded.done
        self.failed += recorded.failed
        self.flagged += recorded.flagged


@dataclass
class BuildSummary:
    """What a build did: a :class:`StageReport` per stage that ran (keyed by stage name), the wall time, and
    when the first render started and was recorded (from the start of the build; ``None`` without renders).

    The named properties read the stages' reports (``rendered``, ``failed``, ``passes``, ``icons``, ...)."""

    stages: dict[str, StageReport] = field(default_factory=dict)
    seconds: float = 0.0
    first_render_seconds: float | None = None
    render_start_seconds: float | None = None

    def of(self, name: str) -> StageReport:
        """Stage ``name``'s report (an empty one when it did not run)."""
        return self.stages.get(name) or StageReport()

    @property
    def failures(self) -> list[str]:
        """Every stage's failures, as ``"STAGE: WHAT: MESSAGE"``."""
        return [f"{name}: {line}" for name, report in self.stages.items() for line in report.failed]

    rendered = property(lambda self: self.of("renders").done, doc="Renders recorded (any status).")
    failed = property(lambda self: self.of("renders").failed, doc="Renders that failed, with their messages.")
    not_improved = property(lambda self: self.of("renders").flagged, doc="Renders whose objective did not rise.")
    already = property(lambda self: self.of("renders").already, doc="Wanted renders the atlas already held.")
    passes = property(lambda self: self.of("exemplars").done, doc="Exemplar passes run (one per layer).")
    pass_images_per_second = property(lambda self: self.of("exemplars").per_second, doc="The pass's images/s.")
    crops = property(lambda self: self.of("crops").done, doc="Exemplar crops cut.")
    circuits = property(lambda self: self.of("circuits").done, doc="Units whose circuit was recorded.")
    circuit_seconds = property(lambda self: self.of("circuits").seconds, doc="The circuits stage's wall time.")
    trust = property(lambda self: self.of("trust").done, doc="Units whose trust record was recorded.")
    trust_seconds = property(lambda self: self.of("trust").seconds, doc="The trust stage's wall time.")
    maps = property(lambda self: self.of("map-layout").done, doc="Activation atlases laid out.")
    icons = property(lambda self: self.of("map-icons").done, doc="Activation-atlas icons rendered.")
    icon_failures = property(lambda self: self.of("map-icons").failed, doc="Icon tasks that failed.")
    map_seconds = property(lambda self: sum(r.seconds for n, r in self.stages.items() if n.startswith("map-")),
                           doc="The activation-atlas stages' wall time.")


@dataclass(frozen=True)
class Recorded:
    """What :meth:`Stage.record` did with one outcome: records written, failures (``"WHAT: MESSAGE"``), records
    flagged, and a line for the user (or ``None``)."""

    done: int = 0
    failed: tuple[str, ...] = ()
    flagged: tuple[str, ...] = ()
    message: str | None = None


@dataclass(frozen=True)
class LayerPlan:
    """A layer of a build: its reference, atlas id, channel count, wanted units and output grid."""

    ref: LayerRef
    id: int
    channels: int
    units: list[int]
    grid: tuple[int, ...]  # the output's spatial shape at the input size


@dataclass(frozen=True)
class BuildRequest:
    """What the user asked a build for (see :func:`~filterscope.atlas.build.build_atlas`'s arguments)."""

    recipes: tuple[tuple[str, Recipe], ...] = ()
    seeds: tuple[int, ...] = (0,)
    dataset: Dataset | None = None
    exemplars: int = 9
    scores: bool = True
    fit: str = "crop"
    batch_size: int | None = None
    retry_failed: bool = False
    checkpoint_seconds: float = 30.0
    circuits: bool = True
    trust: bool = True
    maps: MapSettings | None = None
    extras: tuple[object, ...] = ()
    """The settings of stages beyond these (``build_atlas(stages=...)``): one object per stage, found by its type."""

    def option(self, kind: type[S]) -> S | None:
        """The settings of type ``kind`` the build was given, if any (what a stage's :meth:`Stage.wanted` asks)."""
        return next((x for x in self.extras if isinstance(x, kind)), None)


@dataclass
class BuildContext:
    """One build's state, shared by its stages: the atlas, the model, how tasks run, what was asked, the layers,
    where progress goes, what was done so far (``summary``; ``pass_ids``: each layer's exemplar pass)."""

    store: AtlasStore
    loaded: LoadedModel
    runtime: Runtime
    executor: Executor
    progress: BuildProgress
    request: BuildRequest
    plan: list[LayerPlan]
    weights_hash: str
    started: float = field(default_factory=time.perf_counter)
    summary: BuildSummary = field(default_factory=BuildSummary)
    pass_ids: dict[int, int] = field(default_factory=dict)
    references: torch.Tensor | None = None  # the quality scores' reference photos, loaded once

    def passes_without(self, table: str, key: str, minimum: int, stage: str, work: str
                       ) -> Iterator[tuple[LayerPlan, int, list[str]]]:
        """Each planned layer with a finished exemplar pass of at least ``minimum`` images and no row of ``table``
        (a stage's own, with ``layer_id`` and ``key`` columns) for settings ``key``: the layer, its pass and the
        pass's image paths; a layer whose pass is too small is said (``stage``'s ``work`` needs more)."""
        with self.store.records() as conn:
            have = {(r["layer_id"], r["key"]) for r in conn.execute(f"SELECT layer_id, key FROM {table}")}
        for layer in self.plan:
            pass_id = self.pass_ids.get(layer.id)
            if pass_id is None or (layer.id, key) in have:
                continue
            paths = self.store.pass_images(pass_id)
            if len(paths) < minimum:
                self.progress.message(f"{stage}: {layer.ref} has {len(paths)} pass images; {work} needs at least "
                                      f"{minimum}", warning=True)
                continue
            yield layer, pass_id, paths

    def report(self, stage: str) -> StageReport:
        """Stage ``stage``'s report in the summary (created on first use)."""
        return self.summary.stages.setdefault(stage, StageReport())


@dataclass(frozen=True)
class NamedFile:
    """A file a record names, for ``atlas check``: the record in words, the path in the atlas, the stage that
    invalidates it, and the record's key for :meth:`Stage.invalidate`."""

    what: str
    path: str
    stage: str
    key: tuple[int, ...]


class _Tally:
    """A stage's progress: counts reports from inside tasks (per unit or image) and finished tasks' sizes."""

    def __init__(self, stage: Stage[Any, Any], context: BuildContext, total: int) -> None:
        self.stage, self.context, self.total = stage, context, total
        self.inside = self.finished = 0

    def within(self, item: object) -> None:
        if isinstance(item, StepInfo):
            self.context.progress.step(item)
            return
        self.inside += 1
        self.tell()

    def task_done(self, size: int) -> None:
        self.finished += size
        self.inside = self.finished
        self.tell()

    def tell(self, note: str = "") -> None:
        self.context.progress.stage(self.stage.name, min(max(self.inside, self.finished), self.total), self.total,
                                    note)


class Stage(Generic[T, R]):
    """A kind of atlas work (see the module docstring). Subclasses set the class attributes, :meth:`plan`,
    :attr:`run` (a module-level task function, so a Dask worker can unpickle it) and :meth:`record`.

    Attributes:
        name: The stage's name (the summary's key, the progress's label, ``atlas check``'s repair kind).
        after: Stages that must run before this one when both run.
        tables: The stage's own tables, as ``CREATE TABLE IF NOT EXISTS`` / ``CREATE INDEX IF NOT EXISTS``
            statements: its schema fragment, created (:meth:`migrate`) by a build before the stage runs, so an atlas
            that never ran it has none, and its reads check for them (:func:`has_table`).
        ordered: Outcomes come back in task order (for a stage that checkpoints a prefix).
        stops: A failed task stops the build (the stage cannot go on without it) instead of being recorded.
        counts: What the progress counts (``unit``, ``image``, ``icon``).
        redone: What a repair of this stage's damaged files leaves for the next build, in words (after a count).
    """

    name: ClassVar[str] = ""
    after: ClassVar[tuple[str, ...]] = ()
    ordered: ClassVar[bool] = False
    stops: ClassVar[bool] = False
    counts: ClassVar[str] = "unit"
    redone: ClassVar[str] = "record(s) to redo"
    tables: ClassVar[tuple[str, ...]] = ()
    run: Callable[[LoadedModel, T, Callable[[Any], None] | None], R]

    def migrate(self, conn: sqlite3.Connection) -> None:
        """Create the stage's :attr:`tables` where missing (inside the caller's write transaction)."""
        for statement in self.tables:
            conn.execute(statement)

    def wanted(self, request: BuildRequest) -> bool:
        """Whether a build with ``request`` runs this stage."""
        return True

    def plan(self, context: BuildContext) -> Sequence[T]:
        """The tasks of what the atlas lacks (empty: nothing to do)."""
        raise NotImplementedError

    def size(self, task: T) -> int:
        """How many of :attr:`counts` a task does (for progress)."""
        return 1

    def record(self, context: BuildContext, task: T, outcome: R | TaskFailure) -> Recorded:
        """Write one outcome to the atlas (a failure recorded with its message); what was done."""
        raise NotImplementedError

    def execute(self, context: BuildContext) -> None:
        """Plan, run on the executor, record each outcome, report; the stage's report counts it all."""
        tasks = list(self.plan(context))
        if not tasks:
            return
        tally = _Tally(self, context, sum(self.size(t) for t in tasks))
        context.progress.message(f"{self.name}: {tally.total} {self.counts}(s) in {len(tasks)} task(s) on "
                                 f"{context.executor.describe()}")
        tally.tell()
        report = context.report(self.name)
        for task, outcome in context.executor.map(type(self).run, context.loaded, tasks, ordered=self.ordered,
                                                  report=tally.within):
            if isinstance(outcome, TaskFailure) and self.stops:
                raise AtlasError(f"{self.name}: a task failed ({outcome.message}); nothing after the last "
                                 "checkpoint was lost, and the same build resumes")
            recorded = self.record(context, task, outcome)
            report.add(recorded)
            for failure in recorded.failed:
                context.progress.message(f"{self.name} failed: {failure}", warning=True)
            if recorded.message:
                context.progress.message(recorded.message)
            tally.task_done(self.size(task))

    def files(self, conn: sqlite3.Connection) -> Iterator[NamedFile]:
        """Every file this stage's records name (for ``atlas check``)."""
        return iter(())

    def recorded(self, store: AtlasStore, layer: LayerRecord) -> str | None:
        """What the atlas holds of this stage's work for ``layer``, in words, for ``atlas status`` (``None``: the
        stage keeps nothing per layer, or nothing yet)."""
        return None

    def invalidate(self, conn: sqlite3.Connection, keys: set[tuple[int, ...]]) -> None:
        """Mark the records of ``keys`` (damaged files) for the next build to redo, inside the caller's
        transaction."""


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    """Whether the atlas has table ``name`` (a stage's tables exist once a build ran it)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


STAGES: Registry[Stage[Any, Any]] = Registry("atlas stage", AtlasError)
"""Every kind of atlas work, by name."""


def register_stage(cls: type[Stage[T, R]]) -> type[Stage[T, R]]:
    """Class decorator: register an instance of the stage under its ``name``."""
    STAGES.add(cls.name, cls())
    return cls


def stage_order(names: Sequence[str] | None = None) -> list[Stage[Any, Any]]:
    """The stages ``names`` (default: all registered), each after those its ``after`` names, in registration
    order otherwise (a depth-first topological sort)."""
    chosen = [STAGES.get(n) for n in (names if names is not None else STAGES.registered())]
    by_name = {s.name: s for s in chosen}
    ordered: list[Stage[Any, Any]] = []
    visiting: set[str] = set()

    def visit(stage: Stage[Any, Any]) -> None:
        if stage in ordered:
            return
        if stage.name in visiting:
            raise AtlasError(f"atlas stages depend on each other in a cycle through {stage.name!r}")
        visiting.add(stage.name)
        for name in stage.after:
            if name in by_name:
                visit(by_name[name])
        visiting.discard(stage.name)
        ordered.append(stage)

    for stage in chosen:
        visit(stage)
    return ordered
