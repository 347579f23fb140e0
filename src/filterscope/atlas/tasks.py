"""What every task of an atlas build shares: the task-function signature, the failure value, the worker's name.

A build's stages (:mod:`.stages`) plan tasks, hand them to an executor (:mod:`.executors`), which maps a *task
function* over them, here or on a Dask worker, and gives back each task's outcome for the stage to record.
Every task function has one signature, ``function(model, task, report) -> outcome``: ``model`` is the
:class:`~filterscope.zoo.model.LoadedModel`, ``task`` a frozen dataclass, ``report`` an optional callable
for progress *inside* the task (only an executor that runs tasks in this process passes one; a worker's
tasks report by finishing). The functions read nothing from the atlas and write nothing: tasks carry all
they need and outcomes all they produce (values, scores, image bytes), so where a task runs changes nothing
in what it returns. Each kind of task lives with its stage: renders in :mod:`.stages.renders`, the exemplar
pass in :mod:`.stages.exemplars`, circuits, trust and the activation atlas in theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._deprecated import moved

__all__ = ["TaskFailure", "Report", "worker_name"]

Report = Callable[[Any], None]


@dataclass(frozen=True)
class TaskFailure:
    """A task that raised where it ran (after the executor's retries): its message, in one line."""

    message: str

    @classmethod
    def of(cls, exc: BaseException) -> TaskFailure:
        return cls(f"{type(exc).__name__}: {exc}".splitlines()[0][:300])


def worker_name() -> str:
    """The Dask worker running this task (its address), or ``local``."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


__getattr__ = moved(__name__, {
    **dict.fromkeys(["RenderTask", "RenderOutcome", "RenderTaskOutcome", "render_task"],
                    "filterscope.atlas.stages.renders"),
    **dict.fromkeys(["PassShard", "ShardOutcome", "scan_shard", "scan"], "filterscope.atlas.scan"),
})
