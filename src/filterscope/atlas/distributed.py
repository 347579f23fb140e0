"""Atlas builds on a Dask cluster: the heavy work on workers, the atlas written by the client.

``build_atlas(..., executor=DaskExecutor("local:2"))`` (``atlas build --cluster local:2``) or a running
scheduler (``--cluster tcp://host:8786``). The client plans from the atlas exactly as a local build does
(only what is missing), then:

* **renders**: each task renders a few units of one layer, recipe and seed (as many as the local build
  puts in one batch, so the batches, and with the same thread count the images, are the local build's)
  and returns each unit's values, scores and image bytes; the client writes the files atomically and
  commits the records, so workers need no shared filesystem;
* **exemplar pass**: the dataset's image list is cut into shards; each task runs the pass over its shard
  (:func:`~filterscope.atlas.build.scan`, reading the images itself: **the dataset paths must be readable
  from the workers**) and returns its per-unit trackers, the per-image rows and placements; the client
  merges them in shard order (the merge is exact: see :mod:`~filterscope.atlas.exemplars`) and
  checkpoints after each shard.

The model travels once to each worker, pickled with cloudpickle (classes of a ``FILE.py:FACTORY`` model
by value, so the file need not exist on the workers); each worker caches it and sets torch's threads to
its own thread count, so that workers on one machine do not oversubscribe its cores. A task whose worker
dies is retried elsewhere by Dask; a task that fails for a reason of its own marks its units as failed,
with the message, and the others go on; a killed client resumes from the atlas like a local build.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ..errors import FilterscopeError, InvalidOptionError
from ..layers import resolve_layer
from ..objectives import Channel
from ..recipes import Recipe
from ..render import plan_batches
from ..runtime import Runtime, usable_cpus
from ..zoo.preprocessing import Placement
from ..zoo.registry import LoadedModel
from .build import (
    BuildProgress,
    BuildSummary,
    Executor,
    LayerPlan,
    PassState,
    RenderGroup,
    record_outcomes,
    render_outcomes,
    scan,
)
from .dataset import Dataset
from .exemplars import UnitTracker
from .store import AtlasStore

__all__ = ["DaskExecutor", "parse_cluster", "SHARD_IMAGES", "RETRIES"]

SHARD_IMAGES = 128
"""Images per exemplar-pass task."""
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


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


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
    from . import build  # noqa: F401

    _restore_malloc()
    try:
        from distributed import get_worker

        threads = int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        threads = usable_cpus()
    torch.set_num_threads(max(1, threads))
    return threads


def render_task(key: str, blob: bytes, layer: str, jobs: list[dict[str, Any]], recipe: dict[str, Any],
                recipe_name: str, seed: int, runtime: dict[str, Any], batch_size: int | None,
                maxima: list[float] | None) -> dict[str, Any]:
    """On a worker: render ``jobs`` of one layer; return their outcomes (values, scores, image bytes)."""
    loaded = _worker_model(key, blob)
    ref = resolve_layer(loaded, layer)
    started = time.perf_counter()
    outcomes: list[dict[str, Any]] = []
    for batch in render_outcomes(loaded, ref, jobs, Recipe.from_dict(recipe), recipe_name, seed, Runtime(**runtime),
                                 batch_size, torch.tensor(maxima) if maxima is not None else None):
        outcomes.extend(batch)
    return {"worker": _worker_name(), "outcomes": outcomes, "seconds": time.perf_counter() - started}


def pass_task(key: str, blob: bytes, layers: list[str], channels: list[int], items: list[tuple[int, str]], n: int,
              fit: str, runtime: dict[str, Any]) -> dict[str, Any]:
    """On a worker: the exemplar pass over one shard ``items`` of ``(index, path)``; return each layer's
    tracker state and per-image rows, and each image's placement or error."""
    loaded = _worker_model(key, blob)
    refs = [resolve_layer(loaded, layer) for layer in layers]
    trackers = [UnitTracker(c, n) for c in channels]
    rows: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in layers]
    placements: dict[int, tuple[float, float, float, float]] = {}
    errors: dict[int, str] = {}

    def on_batch(acts: dict[Any, torch.Tensor], indices: torch.Tensor) -> None:
        for k, ref in enumerate(refs):
            s = trackers[k].update(acts[ref], indices)
            rows[k].append((indices.numpy(), s.means.numpy(), s.maxima.numpy()))

    def on_image(index: int, placement: Placement | None, error: Exception | None) -> None:
        if placement is not None:
            placements[index] = (placement.scale_x, placement.scale_y, placement.offset_x, placement.offset_y)
        else:
            errors[index] = str(error)

    for _ in scan(loaded, refs, items, fit, Runtime(**runtime), on_batch, on_image):
        pass
    joined = []
    for parts in rows:
        if parts:
            joined.append(tuple(np.concatenate([p[i] for p in parts]) for i in range(3)))
        else:
            joined.append((np.zeros(0, dtype=np.int64), np.zeros((0, 0)), np.zeros((0, 0))))
    return {"worker": _worker_name(), "trackers": [t.state_dict() for t in trackers], "rows": joined,
            "placements": placements, "errors": errors}


# ------------------------------------------------------------------------------------ client side
def _ship(loaded: LoadedModel) -> bytes:
    """cloudpickle bytes of the model; classes from ``FILE.py:FACTORY`` files (modules filterscope imported
    from a path) go by value, so workers need not have the file."""
    import cloudpickle

    for module in {type(m).__module__ for m in loaded.module.modules()}:
        if module.startswith("filterscope_user_") and module in sys.modules:
            cloudpickle.register_pickle_by_value(sys.modules[module])
    return cloudpickle.dumps(loaded)


def _runtime_dict(runtime: Runtime) -> dict[str, Any]:
    return {"precision": runtime.precision, "channels_last": runtime.channels_last, "max_memory": runtime.max_memory}


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
        self._blobs: dict[str, Any] = {}

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

    # ------------------------------------------------------------------------------------- pass
    def run_pass(self, store: AtlasStore, loaded: LoadedModel, layers: list[LayerPlan], fields: dict[int, Any],
                 pass_ids: dict[int, int], data: Dataset, n: int, fit: str, runtime: Runtime,
                 progress: BuildProgress, checkpoint_seconds: float) -> float:
        client = self.connect()
        key, blob = self._model(loaded)
        state = PassState(store, layers, pass_ids, len(data), n)
        if state.start:
            progress.message(f"exemplar pass: resuming after image {state.start} of {len(data)} (checkpoint)")
        shards = [[(i, str(data.paths[i])) for i in range(start, min(start + self.shard_images, len(data)))]
                  for start in range(state.start, len(data), self.shard_images)]
        names = [str(x.ref) for x in layers]
        channels = [x.channels for x in layers]
        begun = time.perf_counter()
        futures = [client.submit(pass_task, key, blob, names, channels, shard, n, fit, _runtime_dict(runtime),
                                 retries=RETRIES, pure=False) for shard in shards]
        done = state.start
        try:
            for shard, future in zip(shards, futures):  # merged in order: the checkpoint stays a prefix
                result = future.result()
                for k, x in enumerate(layers):
                    state.trackers[x.id].merge(UnitTracker.from_state_dict(result["trackers"][k]))
                    indices, means, maxima = result["rows"][k]
                    if len(indices):
                        state.write_rows(x.id, indices, means, maxima)
                for index, placement in result["placements"].items():
                    state.placements[index] = placement
                for index, error in sorted(result["errors"].items()):
                    state.add_image(index, None, FilterscopeError(error))
                    progress.message(f"skipped {data.paths[index]}: {error}")
                done = shard[-1][0] + 1
                progress.pass_progress(done, len(data))
                state.save(done)
        finally:
            for future in futures:
                future.cancel()
        seconds = time.perf_counter() - begun
        state.finish(loaded, fields, seconds)
        processed = sum(len(shard) for shard in shards)
        return processed / seconds if seconds > 0 else 0.0

    # ---------------------------------------------------------------------------------- renders
    def run_renders(self, store: AtlasStore, loaded: LoadedModel, groups: list[RenderGroup], runtime: Runtime,
                    batch_size: int | None, progress: BuildProgress, summary: BuildSummary, started: float) -> None:
        from distributed import as_completed

        client = self.connect()
        key, blob = self._model(loaded)
        tasks = []
        for group in groups:
            size = self.units_per_task or batch_size or plan_batches(
                loaded, [Channel(group.layer.ref, job["unit"]).resolve(loaded) for job in group.jobs],
                group.recipe, runtime)
            for start in range(0, len(group.jobs), size):
                tasks.append((group, group.jobs[start:start + size]))
        total = sum(len(jobs) for _, jobs in tasks)
        progress.render_started(f"{len(tasks)} task(s) on {self.cluster_text}", total)
        futures = {}
        for group, jobs in tasks:
            future = client.submit(render_task, key, blob, str(group.layer.ref), jobs, group.recipe.to_dict(),
                                   group.recipe_name, group.seed, _runtime_dict(runtime), batch_size,
                                   group.maxima.tolist() if group.maxima is not None else None, retries=RETRIES,
                                   pure=False)
            futures[future] = (group, jobs)
        per_worker: collections.Counter[str] = collections.Counter()
        begun = time.perf_counter()
        try:
            for future in as_completed(list(futures)):
                group, jobs = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # the task's own failure (after retries): its units are failed
                    message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                    outcomes = [{"id": job["id"], "unit": job["unit"], "status": "failed", "message": message,
                                 "initial_activation": None, "final_activation": None, "activation_ratio": None,
                                 "robustness": None, "high_frequency_share": None, "file": None,
                                 "array_file": None, "seconds": None} for job in jobs]
                    worker = "failed"
                else:
                    outcomes, worker = result["outcomes"], result["worker"]
                record_outcomes(store, loaded.name, str(group.layer.ref), outcomes, progress, summary, started)
                per_worker[worker] += len(outcomes)
                minutes = max(time.perf_counter() - begun, 1e-9) / 60
                progress.workers({name: count / minutes for name, count in per_worker.items()})
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
