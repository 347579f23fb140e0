"""Render on demand: one background worker that renders units into the atlas, one job per unit at a time.

The microscope (started with ``--render``) queues a job when a page asks for a unit the atlas lacks;
the worker renders it with :func:`~filterscope.atlas.build.build_atlas` (so the result is written like
any other render, under the build lock) and reports progress per Adam step. Asking again for a unit
whose job is queued or running returns that job: a page cannot start a second one.

The queue is bounded: at most :data:`MAX_WAITING` jobs wait (more is :class:`QueueFullError`, which the API
answers with 429 and a Retry-After), and only the last :data:`MAX_KEPT` finished jobs stay to be asked about,
so a flood of requests costs neither unbounded memory nor hours of rendering. A job that cannot run (a layer
the model no longer has, a unit beyond its channels) fails with the reason as its message; the worker goes on.
"""

from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..atlas.build import BuildProgress, build_atlas
from ..engine.recipes import Recipe
from ..engine.results import StepInfo
from ..errors import FilterscopeError
from ..zoo.model import LoadedModel

__all__ = ["MAX_KEPT", "MAX_WAITING", "Job", "QueueFullError", "RenderJobs"]

MAX_WAITING = 32
"""Most jobs queued and not yet running."""
MAX_KEPT = 1000
"""Most finished jobs remembered (the oldest are forgotten first; asking for one then is a 404)."""


class QueueFullError(FilterscopeError):
    """Too many render jobs are waiting; ask again when some have finished."""


@dataclass
class Job:
    """One unit to render: where it stands (``queued``, ``running``, ``done``, ``failed``) and how far."""

    id: int
    model: str
    layer: str
    unit: int
    state: str = "queued"
    steps_done: int = 0
    total_steps: int = 0
    message: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def to_dict(self) -> dict[str, object]:
        with self.lock:
            progress = self.steps_done / self.total_steps if self.total_steps else 0.0
            return {"id": self.id, "model": self.model, "layer": self.layer, "unit": self.unit, "state": self.state,
                    "progress": round(progress, 4), "message": self.message}


class _JobProgress(BuildProgress):
    def __init__(self, job: Job) -> None:
        self.job = job

    def step(self, info: StepInfo) -> None:
        with self.job.lock:
            self.job.steps_done = info.steps_done + info.chunk * info.total_steps
            self.job.total_steps = info.total_steps * info.chunks


class RenderJobs:
    """The queue and its worker thread (started on the first job; a daemon, so it never blocks exit).

    Args:
        atlas: The atlas folder.
        model: The loaded model whose units are rendered.
        recipe, seed: What each render uses.
    """

    def __init__(self, atlas: Path, model: LoadedModel, recipe: Recipe, seed: int) -> None:
        self.atlas, self.model, self.recipe, self.seed = atlas, model, recipe, seed
        self.jobs: dict[int, Job] = {}  # in submission order: the oldest finished ones are dropped first
        self.active: dict[tuple[str, int], Job] = {}
        self._ids = itertools.count(1)
        self._queue: queue.Queue[Job] = queue.Queue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def submit(self, layer: str, unit: int) -> Job:
        """The job for ``(layer, unit)``: the queued or running one, or a new one."""
        with self._lock:
            existing = self.active.get((layer, unit))
            if existing is not None:
                return existing
            waiting = sum(1 for job in self.active.values() if job.state == "queued")
            if waiting >= MAX_WAITING:
                raise QueueFullError(f"{waiting} render jobs are waiting (at most {MAX_WAITING}): "
                                     "ask again when some have finished")
            job = Job(next(self._ids), self.model.name, layer, unit)
            self.jobs[job.id] = job
            self.active[(layer, unit)] = job
            self._queue.put(job)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="filterscope-render", daemon=True)
                self._worker.start()
        return job

    def get(self, job_id: int) -> Job | None:
        return self.jobs.get(job_id)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            with job.lock:
                job.state = "running"
            try:
                summary = build_atlas(self.atlas, self.model, job.layer, units=[job.unit], recipes=[self.recipe],
                                      seeds=[self.seed], progress=_JobProgress(job))
                state, message = ("failed", summary.failed[0]) if summary.failed else ("done", "")
            except FilterscopeError as exc:
                state, message = "failed", str(exc)
            except Exception as exc:  # the worker must survive whatever one render does
                state, message = "failed", f"{type(exc).__name__}: {exc}"
            with job.lock:
                job.state, job.message = state, message
            with self._lock:
                self.active.pop((job.layer, job.unit), None)
                self._forget_old()
            self._queue.task_done()

    def _forget_old(self) -> None:
        finished = [i for i, job in self.jobs.items() if job.state in ("done", "failed")]
        for job_id in finished[:max(0, len(finished) - MAX_KEPT)]:
            del self.jobs[job_id]
