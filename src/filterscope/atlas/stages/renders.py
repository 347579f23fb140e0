"""The renders stage: every wanted unit of every layer, recipe and seed rendered once, in tasks of one batch.

**Plan.** Each wanted render is recorded with its identity (:class:`~filterscope.identity.RenderIdentity`);
renders the atlas holds are not planned again (``retry_failed``: failed ones are). What is left is cut into
:class:`RenderTask` s of one batch of the render loop each (its memory budget, or the build's ``batch_size``).
**Run.** :func:`render_task` renders a task's units: their values, quality scores and image bytes (nothing is
written). **Record.** Each outcome's files are written atomically, then its records committed in one
transaction (:func:`record_renders`); a failed task's units are recorded as failed, with the message.
"""

from __future__ import annotations

import io
import math
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ...analysis.activations import layer_means
from ...engine.identity import RenderIdentity, RenderSettings
from ...engine.objectives import Channel
from ...engine.recipes import Recipe
from ...engine.render import iter_render, plan_batches
from ...engine.results import RenderResult
from ...errors import FilterscopeError
from ...files import write_bytes
from ...images import encode_png
from ...layers import layer_slug, resolve_layer, slug
from ...metrics import activation_ratio, high_frequency_share, reference_crops, robustness
from ...runtime.core import Runtime
from ...zoo.model import LoadedModel
from ..records import FinishedRender, PlannedRender, RenderJob
from ..store import AtlasStore
from ..tasks import Report, TaskFailure, worker_name
from .base import BuildContext, BuildRequest, LayerPlan, NamedFile, Recorded, Stage, register_stage

__all__ = ["RenderTask", "RenderOutcome", "RenderTaskOutcome", "render_task", "RenderGroup", "RenderStage",
           "record_renders"]

_NOTES = {"inactive": "  (inactive)", "not-improved": "  (not-improved: the objective did not rise)"}


@dataclass(frozen=True)
class RenderTask:
    """Render ``jobs`` (units of ``layer``) with one recipe and seed, in one batch of ``batch_size`` (``None``:
    the render loop's own choice); ``maxima``: the layer's reference maxima per unit, for the quality scores
    (``None``: no activation ratio nor robustness)."""

    layer: str
    jobs: tuple[RenderJob, ...]
    recipe: Recipe
    recipe_name: str
    seed: int
    runtime: Runtime
    batch_size: int | None = None
    maxima: tuple[float, ...] | None = None

    @property
    def label(self) -> str:
        return f"{self.layer} {self.recipe_name} seed {self.seed}"


@dataclass(frozen=True)
class RenderOutcome:
    """One rendered unit: what its record will hold (``values``, file names still empty) and its files' bytes
    (PNG with metadata; ``.npy`` for images of other than 1 or 3 channels) under ``name`` (no suffix)."""

    values: FinishedRender
    name: str
    png: bytes | None = None
    npy: bytes | None = None


@dataclass(frozen=True)
class RenderTaskOutcome:
    outcomes: tuple[RenderOutcome, ...]
    worker: str
    seconds: float


def render_task(model: LoadedModel, task: RenderTask, report: Report | None = None) -> RenderTaskOutcome:
    """Render a :class:`RenderTask`: its units' values, quality scores and image bytes (nothing is written).
    ``report`` receives a :class:`~filterscope.results.StepInfo` per Adam step."""
    ref = resolve_layer(model, task.layer)
    started = time.perf_counter()
    maxima = torch.tensor(task.maxima) if task.maxima is not None else None
    queue = list(task.jobs)
    outcomes: list[RenderOutcome] = []
    for result in iter_render(model, [Channel(ref, job.unit) for job in task.jobs], recipe=task.recipe,
                              seed=task.seed, batch_size=task.batch_size, runtime=task.runtime, callback=report):
        outcomes.extend(_outcome(model, task, result, i, queue.pop(0), maxima) for i in range(len(result)))
    return RenderTaskOutcome(tuple(outcomes), worker_name(), time.perf_counter() - started)


def _outcome(model: LoadedModel, task: RenderTask, result: RenderResult, i: int, job: RenderJob,
             maxima: torch.Tensor | None) -> RenderOutcome:
    status = result.status[i] if result.status else "ok"
    values = FinishedRender(job.id, job.unit, "failed" if status == "non-finite" else status,
                            initial_activation=float(result.initial_values[i]),
                            final_activation=float(result.values[i]), seconds=result.seconds / max(len(result), 1))
    name = f"u{job.unit:04d}-{slug(task.recipe_name)}-s{task.seed}-{job.key[:8]}"
    if status == "non-finite" or not math.isfinite(float(result.values[i])):
        message = "the optimization produced NaN or infinity (lower the learning rate, check the model)"
        return RenderOutcome(replace(values, status="failed", message=message), name)
    image = result.images[i:i + 1]
    if maxima is not None:
        objective, reference = result.objectives[i], float(maxima[job.unit])
        values = replace(values, activation_ratio=float(activation_ratio(model, objective, image, reference)[0]),
                         robustness=float(robustness(model, objective, image, reference, seed=task.seed)[0]))
    values = replace(values, high_frequency_share=float(high_frequency_share(image)[0]))
    meta, npy = result.metadata(i), None
    if result.images.shape[1] not in (1, 3):
        buffer = io.BytesIO()
        np.save(buffer, result.images[i].numpy().astype(np.float32))
        npy = buffer.getvalue()
        meta["array"] = f"{name}.npy"
    return RenderOutcome(values, name, encode_png(result.pil(i), meta), npy)


@dataclass
class RenderGroup:
    """Planned renders of one layer with one recipe and seed (``jobs``: the atlas's pending rows);
    ``maxima``: the layer's reference maxima for the quality scores (or ``None``)."""

    layer: LayerPlan
    recipe_name: str
    recipe: Recipe
    seed: int
    jobs: list[RenderJob]
    maxima: torch.Tensor | None


def plan_renders(context: BuildContext) -> list[RenderGroup]:
    """Record every wanted render (pending unless the atlas has it) and return what is left to do."""
    request, store = context.request, context.store
    settings = RenderSettings.of(context.loaded, context.runtime)
    groups = []
    for layer in context.plan:
        maxima = None
        for (recipe_name, recipe), seed in ((r, s) for r in request.recipes for s in request.seeds):
            planned = [_planned(context, layer, unit, recipe_name, recipe, seed, settings) for unit in layer.units]
            store.add_renders(planned)
            pending = store.pending_renders([p.key for p in planned], request.retry_failed)
            context.report(RenderStage.name).already += len(planned) - len(pending)
            if not pending:
                continue
            if request.scores and maxima is None:
                maxima = _reference_maxima(context, layer)
            groups.append(RenderGroup(layer, recipe_name, recipe, seed, pending, maxima))
    return groups


def _planned(context: BuildContext, layer: LayerPlan, unit: int, recipe_name: str, recipe: Recipe, seed: int,
             settings: RenderSettings) -> PlannedRender:
    objective = Channel(layer.ref, unit)
    identity = RenderIdentity.of(context.weights_hash, objective, recipe, seed, settings)
    return PlannedRender(layer.id, unit, objective.description, recipe_name, identity.recipe, seed, settings,
                         identity.key)


def _reference_maxima(context: BuildContext, layer: LayerPlan) -> torch.Tensor | None:
    """The layer's per-unit maxima over the reference photos (the quality scores' scale), or ``None``."""
    if context.references is None:
        try:
            context.references = reference_crops(context.loaded)
        except FilterscopeError as exc:
            context.progress.message(f"no quality scores: {exc}")
            context.references = torch.zeros(0)
    if not context.references.numel():
        return None
    means = layer_means(context.loaded, layer.ref, context.references, runtime=context.runtime)
    return means.amax(dim=0).clamp(min=1e-6)


def render_tasks(context: BuildContext, groups: list[RenderGroup]) -> list[RenderTask]:
    """Each group's jobs in tasks of one batch (the render loop's own batches: the same images)."""
    tasks: list[RenderTask] = []
    for group in groups:
        size = context.executor.units_per_task or context.request.batch_size or plan_batches(
            context.loaded, [Channel(group.layer.ref, job.unit).resolve(context.loaded) for job in group.jobs],
            group.recipe, context.runtime)
        maxima = tuple(group.maxima.tolist()) if group.maxima is not None else None
        # each task is one batch of `size` (or fewer) units: the render loop need not plan it again
        tasks.extend(RenderTask(str(group.layer.ref), tuple(group.jobs[start:start + size]), group.recipe,
                                group.recipe_name, group.seed, context.runtime, size, maxima)
                     for start in range(0, len(group.jobs), size))
    return tasks


def record_renders(store: AtlasStore, model_name: str, task: RenderTask,
                   outcome: RenderTaskOutcome | TaskFailure) -> list[FinishedRender]:
    """Write each rendered unit's files atomically, then commit their records in one transaction (a failed
    task: its units recorded as failed, with the message); the records."""
    if isinstance(outcome, TaskFailure):
        finished = [FinishedRender(job.id, job.unit, "failed", message=outcome.message) for job in task.jobs]
    else:
        folder = store.path / "renders" / slug(model_name) / layer_slug(task.layer)
        finished = []
        for o in outcome.outcomes:
            array = write_bytes(folder / f"{o.name}.npy", o.npy).relative_to(store.path) if o.npy is not None else None
            png = write_bytes(folder / f"{o.name}.png", o.png).relative_to(store.path) if o.png is not None else None
            finished.append(replace(o.values, file=str(png) if png else None, array_file=str(array) if array else None))
    store.finish_renders(finished)
    return finished


def _line(layer: str, row: FinishedRender) -> str:
    extra = f", robustness {row.robustness:.2f}" if row.robustness is not None else ""
    return (f"{layer} unit {row.unit}: activation {row.initial_activation:.3g} → {row.final_activation:.3g}"
            f"{extra}{_NOTES.get(row.status, '')}")


@register_stage
class RenderStage(Stage[RenderTask, RenderTaskOutcome]):
    """Renders (see the module docstring)."""

    name = "renders"
    redone = "render(s) back to pending"
    after = ("circuits",)
    run = staticmethod(render_task)

    def wanted(self, request: BuildRequest) -> bool:
        return bool(request.recipes and request.seeds)

    def plan(self, context: BuildContext) -> Sequence[RenderTask]:
        groups = plan_renders(context)
        tasks = render_tasks(context, groups)
        if tasks:
            context.summary.render_start_seconds = time.perf_counter() - context.started
            label = tasks[0].label if len(groups) == 1 else f"{len(groups)} layer/recipe/seed groups"
            context.progress.message(f"renders: {label}")
        return tasks

    def size(self, task: RenderTask) -> int:
        return len(task.jobs)

    def record(self, context: BuildContext, task: RenderTask,
               outcome: RenderTaskOutcome | TaskFailure) -> Recorded:
        finished = record_renders(context.store, context.loaded.name, task, outcome)
        if context.summary.first_render_seconds is None:
            context.summary.first_render_seconds = time.perf_counter() - context.started
        failed = tuple(f"{task.layer} unit {r.unit}: {r.message}" for r in finished if r.status == "failed")
        flagged = tuple(f"{task.layer} unit {r.unit}" for r in finished if r.status == "not-improved")
        lines = "\n".join(_line(task.layer, r) for r in finished if r.status != "failed")
        return Recorded(len(finished), failed, flagged, lines or None)

    def files(self, conn: sqlite3.Connection) -> Iterator[NamedFile]:
        for r in conn.execute("SELECT r.id, r.unit, r.recipe_name, r.seed, r.file, r.array_file, l.name FROM renders r "
                              "JOIN layers l ON l.id = r.layer_id WHERE r.status != 'pending' ORDER BY r.id"):
            what = f"render of {r['name']} unit {r['unit']} ({r['recipe_name']}, seed {r['seed']})"
            for path in (r["file"], r["array_file"]):
                if path:
                    yield NamedFile(what, path, self.name, (r["id"],))

    def invalidate(self, conn: sqlite3.Connection, keys: set[tuple[int, ...]]) -> None:
        conn.executemany("UPDATE renders SET status = 'pending', file = NULL, array_file = NULL, finished = NULL, "
                         "initial_activation = NULL, final_activation = NULL, activation_ratio = NULL, "
                         "robustness = NULL, high_frequency_share = NULL, message = NULL WHERE id = ?", sorted(keys))
