"""Where a build's tasks run: an executor maps a task function over tasks and gives back each outcome.

:class:`Executor` is the whole interface: :meth:`~Executor.map` takes a task function of :mod:`.tasks`
(``function(model, task, report)``), the model and the tasks, and yields ``(task, outcome)`` pairs, in the
tasks' order (``ordered=True``: the exemplar pass merges shards in order so its checkpoint stays a prefix)
or as they finish. An executor decides *where* the function runs, nothing else: :class:`LocalExecutor`
calls it here, one task after the other (passing ``report`` through, for progress within a task);
:class:`~filterscope.atlas.distributed.DaskExecutor` calls the very same function on Dask workers. The
atlas is always written by the building process, from the outcomes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from ..zoo.model import LoadedModel
from .tasks import TaskFailure

__all__ = ["Executor", "LocalExecutor", "TaskFunction", "SHARD_IMAGES"]

T = TypeVar("T")
R = TypeVar("R")
TaskFunction = Callable[[LoadedModel, T, Callable[[Any], None] | None], R]

SHARD_IMAGES = 128
"""Images per exemplar-pass task (the pass checkpoints between shards)."""


class Executor:
    """Maps task functions over tasks (see the module docstring).

    Attributes:
        shard_images: Images per exemplar-pass shard.
        units_per_task: Units per render task (``None``: one batch of the render loop, as the memory budget
            or the build's ``batch_size`` makes it).
    """

    shard_images: int = SHARD_IMAGES
    units_per_task: int | None = None

    def map(self, function: TaskFunction[T, R], model: LoadedModel, tasks: Sequence[T], *, ordered: bool = True,
            report: Callable[[Any], None] | None = None) -> Iterator[tuple[T, R | TaskFailure]]:
        """Run ``function(model, task, report)`` for every task; yield each task with its outcome, or with a
        :class:`~filterscope.atlas.tasks.TaskFailure` where the task raised where it ran and the executor
        gave up on it (this process's own executor lets the exception through instead)."""
        raise NotImplementedError

    def describe(self) -> str:
        """Where the tasks run, in words."""
        raise NotImplementedError


class LocalExecutor(Executor):
    """This process, one task after the other, lazily (the next task starts when the build asks for its
    outcome, after it recorded the last one). An exception in a task stops the build, as any error does
    here; what was recorded stays."""

    def __init__(self, *, shard_images: int = SHARD_IMAGES, units_per_task: int | None = None) -> None:
        self.shard_images, self.units_per_task = shard_images, units_per_task

    def map(self, function: TaskFunction[T, R], model: LoadedModel, tasks: Sequence[T], *, ordered: bool = True,
            report: Callable[[Any], None] | None = None) -> Iterator[tuple[T, R | TaskFailure]]:
        for task in tasks:
            yield task, function(model, task, report)

    def describe(self) -> str:
        return "this process"
