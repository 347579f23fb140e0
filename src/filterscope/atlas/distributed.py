"""Atlas builds on a Dask cluster: the heavy work on workers, the atlas written by the client.

``build_atlas(..., executor=DaskExecutor("local:2"))`` (``atlas build --cluster local:2``) or a running
scheduler (``--cluster tcp://host:8786``). The build plans, merges and records exactly as a local build
does (:mod:`.build`); :class:`DaskExecutor` only maps the same task functions (:mod:`.tasks`) on workers:

* **renders** (:func:`~filterscope.atlas.tasks.render_task`): each task renders a few units of one layer,
  recipe and seed (one batch of the render loop, as locally, so with the same thread count the images are
  the local build's) and returns each unit's values, scores and image bytes; the client writes the files
  atomically and commits the records, so workers need no shared filesystem;
* **exemplar pass** (:func:`~filterscope.atlas.tasks.scan_shard`): each task runs the pass over one shard of
  the dataset, reading the images itself (**the dataset paths must be readable from the workers**), and
  returns its trackers and per-image rows, which the client merges in shard order.

The model travels once to each worker, pickled with cloudpickle (classes of a ``FILE.py:FACTORY`` model
by value, so the file need not exist on the workers); each worker caches it and sets torch's threads to
its own thread count, so that workers on one machine do not oversubscribe its cores. A task whose worker
dies is retried elsewhere by Dask; a task that fails for a reason of its own marks its units as failed,
with the message, and the others go on; a killed client resumes from the atlas like a local build.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from ..errors import FilterscopeError, InvalidOptionError
from ..runtime.core import usable_cpus
from ..zoo.model import LoadedModel
from .executors import SHARD_IMAGES, Executor, R, T, TaskFunction
from .tasks import TaskFailure

if TYPE_CHECKING:
    from distributed import Future

__all__ = ["DaskExecutor", "parse_cluster", "run_on_worker", "RETRIES"]

RETRIES = 3
"""How often Dask retries a task whose worker died."""


def parse_cluster(text: str) -> tuple[str, int | str]:
    """``local:N`` → ``("local", N)``; ``tcp://host:port`` (or ``tls://``) → ``("address", text)``."""
    if text.startswith("local:"):
        try:
            workers = int(text.split(":", 1)[1])
        except ValueError:
            workers = 0
        if not 1 <= workers <= 256:
            raise InvalidOptionError(f"--cluster local:N needs N from 1 to 256 worker processes (got {text!r})")
        return "local", workers
    if text.startswith(("tcp://", "tls://", "ucx://")) and len(text.split("://", 1)[1]) > 0:
        return "address", text
    raise InvalidOptionError(f"Bad --cluster {text!r}: give local:N (N worker processes on this machine) or the "
                             "scheduler's address, e.g. tcp://10.0.0.5:8786")


# ------------------------------------------------------------------------------------ worker side
_MODELS: dict[str, LoadedModel] = {}


def _worker_model(key: str, blob: bytes) -> LoadedModel:
    """The model of ``blob`` (cloudpickle bytes), unpickled once per worker process; torch's threads set to
    the worker's thread count."""
    _warm()  # in this task's thread: OpenMP keeps the thread count per thread (Dask's nanny sets OMP_NUM_THREADS=1)
    model = _MODELS.get(key)
    if model is None:
        import cloudpickle

        model = _MODELS[key] = cloudpickle.loads(blob)
    return model


_MALLOC_SET = False


def _restore_malloc() -> None:
    """Undo the ``MALLOC_TRIM_THRESHOLD_=65536`` that Dask's nanny gives its workers: with it glibc stops
    adapting its mmap threshold, every activation buffer over 128 KiB is mapped and unmapped anew, and
    the network runs 2.6x slower (measured: 120 images through Lite0 ``_blocks.8``, 3.9 s instead of 1.5 s).
    The values set are those glibc's own adaptation ends at on 64-bit machines."""
    global _MALLOC_SET
    if _MALLOC_SET or not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass
    _MALLOC_SET = True


def _warm() -> int:
    """Import what tasks need (torch takes seconds), restore malloc's behaviour and set torch's threads (in
    the calling thread: OpenMP keeps the count per thread)."""
    from . import tasks  # noqa: F401

    _restore_malloc()
    try:
        from distributed import get_worker

        threads = int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        threads = usable_cpus()
    torch.set_num_threads(max(1, threads))
    return threads


def run_on_worker(function: TaskFunction[T, R], key: str, blob: bytes, task: T) -> R:
    """On a worker: the task function of :mod:`.tasks`, called as the local executor calls it (no ``report``:
    a worker's task reports by finishing), with the model unpickled once per worker."""
    return function(_worker_model(key, blob), task, None)


# ------------------------------------------------------------------------------------ client side
def _ship(loaded: LoadedModel) -> bytes:
    """cloudpickle bytes of the model; classes from ``FILE.py:FACTORY`` files (modules filterscope imported
    from a path) go by value, so workers need not have the file."""
    import cloudpickle

    for module in {type(m).__module__ for m in loaded.module.modules()}:
        if module.startswith("filterscope_user_") and module in sys.modules:
            cloudpickle.register_pickle_by_value(sys.modules[module])
    return cloudpickle.dumps(loaded)


class DaskExecutor(Executor):
    """Run a build's pass and renders on a Dask cluster (see the module docstring).

    Args:
        cluster: ``local:N`` (a ``LocalCluster`` of N worker processes on 127.0.0.1, threads per worker
            chosen to fill this machine's cores) or a scheduler address (``tcp://host:8786``).
        shard_images: Images per exemplar-pass task.
        units_per_task: Units per render task (default: the local build's batch size).
    """

    def __init__(self, cluster: str, *, shard_images: int = SHARD_IMAGES, units_per_task: int | None = None) -> None:
        self.kind, self.target = parse_cluster(cluster)
        self.cluster_text = cluster
        self.shard_images, self.units_per_task = shard_images, units_per_task
        self._client: Any = None
        self._cluster: Any = None
        self._blobs: dict[str, Future] = {}  # model key -> its Dask future

    # -------------------------------------------------------------------------------- connection
    def connect(self) -> Any:
        """The Dask client (started on first use)."""
        if self._client is not None:
            return self._client
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise FilterscopeError("--cluster needs Dask distributed: pip install 'filterscope[dask]'") from None
        if self.kind == "local":
            workers = int(self.target)
            threads = max(1, usable_cpus() // workers)
            # Everything on the loopback interface: the scheduler, the workers and their HTTP endpoints.
            self._cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                                         host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                         worker_dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
            self._client = Client(self._cluster)
        else:
            try:
                self._client = Client(str(self.target), timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise FilterscopeError(f"Cannot reach the Dask scheduler at {self.target}: {exc}") from None
        self._client.run(_warm)  # every worker imports torch and filterscope now, not in its first task
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """The cluster, its workers and threads (connects when not yet connected)."""
        client = self.connect()
        info = client.scheduler_info()
        workers = info.get("workers", {})
        threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
        return f"Dask cluster {self.cluster_text}: {len(workers)} worker(s), {threads} thread(s)"

    def _model(self, loaded: LoadedModel) -> tuple[str, Any]:
        """The model's key (SHA-256 of its bytes) and its bytes, scattered once to every worker."""
        blob = _ship(loaded)
        key = hashlib.sha256(blob).hexdigest()
        if key not in self._blobs:
            self._blobs[key] = self.connect().scatter(blob, broadcast=True, hash=False)
        return key, self._blobs[key]

    # ------------------------------------------------------------------------------------------ map
    def map(self, function: TaskFunction[T, R], model: LoadedModel, tasks: Sequence[T], *, ordered: bool = True,
            report: Callable[[Any], None] | None = None) -> Iterator[tuple[T, R | TaskFailure]]:
        """Submit every task at once (retried elsewhere when its worker dies); yield them in order or as they
        finish. A task that raises on its own is yielded with a :class:`~filterscope.atlas.tasks.TaskFailure`
        (the build records its units as failed and goes on). ``report`` is not used: workers report by
        finishing."""
        from distributed import as_completed

        client = self.connect()
        key, blob = self._model(model)
        futures = {client.submit(run_on_worker, function, key, blob, task, retries=RETRIES, pure=False): task
                   for task in tasks}
        try:
            for future in (list(futures) if ordered else as_completed(list(futures))):
                try:
                    outcome: R | TaskFailure = future.result()
                except Exception as exc:  # the task's own failure (after retries)
                    outcome = TaskFailure.of(exc)
                yield futures[future], outcome
        finally:
            for future in futures:
                future.cancel()


@contextmanager
def dask_executor(cluster: str | None) -> Iterator[DaskExecutor | None]:
    """A :class:`DaskExecutor` for ``cluster`` (closed afterwards), or ``None`` for a local build."""
    if cluster is None:
        yield None
        return
    executor = DaskExecutor(cluster)
    try:
        yield executor
    finally:
        executor.close()
