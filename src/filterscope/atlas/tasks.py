"""The work of an atlas build as typed tasks, and the functions that do it.

A build plans (:mod:`.build`), then hands tasks to an executor (:mod:`.executors`), which maps a *task
function* over them, here or on a Dask worker, and gives back each task's outcome for the build to record.
Every task function has one signature, ``function(model, task, report) -> outcome``: ``model`` is the
:class:`~filterscope.zoo.model.LoadedModel`, ``task`` a frozen dataclass, ``report`` an optional callable
for progress *inside* the task (only an executor that runs tasks in this process passes one; a worker's
tasks report by finishing). The functions read nothing from the atlas and write nothing: tasks carry all
they need and outcomes all they produce (values, scores, image bytes), so where a task runs changes nothing
in what it returns.

* :class:`RenderTask` → :func:`render_task` → :class:`RenderTaskOutcome`: a few units of one layer, recipe
  and seed (one batch of the render loop);
* :class:`PassShard` → :func:`scan_shard` → :class:`ShardOutcome`: the exemplar pass over a slice of the
  dataset (the trackers' state and the per-image rows; merged exactly by the build).

A new kind of work is a task type, a function and a record step in the build; neither executor changes.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from ..analysis.inputs import decode_image, decoded
from ..errors import FilterscopeError
from ..images import encode_png
from ..layers import OUTPUT, LayerRef, resolve_layer, slug
from ..maps.samples import SampleRows, SampleSpec, Tangents, Taps, class_gradients, collect, primal
from ..metrics import activation_ratio, high_frequency_share, robustness
from ..objectives import Channel
from ..recipes import Recipe
from ..render import iter_render
from ..results import RenderResult
from ..runtime import ANALYSIS_BATCH, Forward, Runtime, prefetch
from ..zoo.model import LoadedModel
from ..zoo.preprocessing import Placement
from .exemplars import UnitTracker
from .records import FinishedRender, RenderJob

__all__ = ["RenderTask", "RenderOutcome", "RenderTaskOutcome", "PassShard", "ShardOutcome", "TaskFailure",
           "render_task", "scan_shard", "scan", "worker_name"]

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


# ---------------------------------------------------------------------------------------- renders
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


# ----------------------------------------------------------------------------------- exemplar pass
@dataclass(frozen=True)
class PassShard:
    """The exemplar pass of ``layers`` (with their channel counts) over ``items``, ``(dataset index, path)``
    pairs: ``n`` exemplars per unit and kind, images fitted to the input by ``fit``."""

    layers: tuple[str, ...]
    channels: tuple[int, ...]
    items: tuple[tuple[int, str], ...]
    n: int
    fit: str
    runtime: Runtime
    samples: tuple[SampleSpec | None, ...] = ()

    @property
    def end(self) -> int:
        """The dataset index after the shard's last image."""
        return self.items[-1][0] + 1 if self.items else 0


@dataclass(frozen=True)
class ShardOutcome:
    """Per layer: the tracker's state, the per-image rows ``(indices, means, maxima)`` and the activation
    atlas's samples (``None`` where none were asked for); per image: its placement in the input ``(scale_x,
    scale_y, offset_x, offset_y)`` or why it was skipped."""

    trackers: tuple[dict[str, torch.Tensor], ...]
    rows: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]
    placements: dict[int, tuple[float, float, float, float]]
    errors: dict[int, str]
    worker: str
    samples: tuple[SampleRows | None, ...] = ()


def scan_shard(model: LoadedModel, shard: PassShard, report: Report | None = None) -> ShardOutcome:
    """The exemplar pass over one :class:`PassShard`; ``report`` receives the dataset index after each image."""
    refs = [resolve_layer(model, layer) for layer in shard.layers]
    trackers = [UnitTracker(c, shard.n) for c in shard.channels]
    rows: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in refs]
    placements: dict[int, tuple[float, float, float, float]] = {}
    errors: dict[int, str] = {}
    specs = dict(zip(refs, shard.samples))
    taken: list[list[SampleRows]] = [[] for _ in refs]

    def on_batch(acts: dict[LayerRef, torch.Tensor], indices: torch.Tensor,
                 samples: dict[LayerRef, SampleRows]) -> None:
        for k, ref in enumerate(refs):
            s = trackers[k].update(acts[ref], indices)
            rows[k].append((indices.numpy(), s.means.numpy(), s.maxima.numpy()))
            if ref in samples:
                taken[k].append(samples[ref])

    def on_image(index: int, placement: Placement | None, error: Exception | None) -> None:
        if placement is not None:
            placements[index] = (placement.scale_x, placement.scale_y, placement.offset_x, placement.offset_y)
        else:
            errors[index] = str(error)

    for done, _settled in scan(model, refs, shard.items, shard.fit, shard.runtime, on_batch, on_image,
                               {ref: spec for ref, spec in specs.items() if spec is not None}):
        if report is not None:
            report(done)
    joined = tuple(tuple(np.concatenate([p[i] for p in parts]) for i in range(3)) if parts else
                   (np.zeros(0, dtype=np.int64), np.zeros((0, 0)), np.zeros((0, 0))) for parts in rows)
    samples = tuple(_joined(taken[k]) if specs.get(ref) is not None else None for k, ref in enumerate(refs))
    return ShardOutcome(tuple(t.state_dict() for t in trackers), joined, placements, errors,  # type: ignore[arg-type]
                        worker_name(), samples)


def _joined(parts: list[SampleRows]) -> SampleRows | None:
    if not parts:
        return None
    return SampleRows(*(np.concatenate([getattr(p, name) for p in parts])
                        for name in ("places", "vectors", "classes", "attributions")))


def scan(loaded: LoadedModel, refs: Sequence[LayerRef], items: Iterable[tuple[int, str | Path]], fit: str,
         runtime: Runtime, on_batch: Callable[[dict[LayerRef, torch.Tensor], torch.Tensor,
                                               dict[LayerRef, SampleRows]], None],
         on_image: Callable[[int, Placement | None, Exception | None], None],
         samples: dict[LayerRef, SampleSpec] | None = None) -> Iterator[tuple[int, bool]]:
    """The exemplar pass's loop over ``(index, path)`` items: decode in a background thread, run the
    truncated network on batches of :data:`ANALYSIS_BATCH`, hand each batch's activations (on the CPU),
    dataset indices and activation-atlas samples (of the layers in ``samples``:
    :mod:`filterscope.maps.samples`) to ``on_batch``, report each image's placement (or its error) to
    ``on_image``. Attributing samples to classes runs the network to its output, with gradients from there
    back to the sampled layers only.

    Yields ``(index + 1, settled)`` after every image; ``settled`` is true when no decoded image waits for a
    batch (a safe point to checkpoint). Used by the local build and by cluster workers alike.
    """

    def decode(item: tuple[int, str | Path]) -> tuple[int, Any]:
        try:
            return item[0], decode_image(loaded, item[1], fit, None)
        except (FilterscopeError, OSError) as exc:
            return item[0], exc

    pending: list[tuple[int, torch.Tensor]] = []
    samples = samples or {}
    attributed = [ref for ref, spec in samples.items() if spec.classes > 0] if loaded.categories else []
    out = resolve_layer(loaded, OUTPUT) if attributed else None
    # one layer sampled at one position per image: forward-mode attribution to every class (maps.samples)
    tangents = (Tangents(loaded, attributed[0], samples[attributed[0]])
                if len(attributed) == 1 and samples[attributed[0]].positions == "random" else None)
    taps = Taps(loaded, [] if tangents is not None else attributed)

    def run(forward: Forward) -> None:
        indices = torch.tensor([i for i, _ in pending])
        batch = torch.stack([p for _, p in pending]).to(loaded.device)
        top: torch.Tensor | None = None
        grads: list[list[torch.Tensor]] = [[] for _ in attributed]
        every: torch.Tensor | None = None
        if tangents is not None:
            tangents.indices = indices.tolist()
            with fwAD.dual_level():
                duals = forward(loaded.preprocessing.normalize(batch))
                if out is not None and duals[out].dim() == 2:
                    every = fwAD.unpack_dual(duals[out]).tangent
                acts = {ref: primal(act) for ref, act in duals.items()}
        else:
            with torch.set_grad_enabled(bool(attributed)):
                acts = forward(loaded.preprocessing.normalize(batch))
                if out is not None and acts[out].dim() == 2 and all(ref in taps.tensors for ref in attributed):
                    k = min(max(samples[ref].classes for ref in attributed), acts[out].shape[1])
                    top, grads = class_gradients(acts[out], [taps.tensors[ref] for ref in attributed], k)
        pending.clear()
        gradient = dict(zip(attributed, grads))
        taken = {ref: collect(acts[ref], indices.tolist(), spec, top if gradient.get(ref) else None,
                              gradient.get(ref, []), every if tangents is not None and ref in attributed else None)
                 for ref, spec in samples.items()}
        taps.tensors.clear()
        on_batch({ref: acts[ref].detach().cpu() for ref in refs}, indices, taken)

    layers = list(refs) + ([out] if out is not None and out not in refs else [])
    with torch.no_grad(), Forward(loaded, layers, runtime) as forward, taps, tangents or contextlib.nullcontext():
        for index, parts in prefetch(items, decode, ahead=ANALYSIS_BATCH * 2):
            if isinstance(parts, Exception):
                on_image(index, None, parts)
            else:
                item = decoded(*parts)
                on_image(index, item.placement, None)
                pending.append((index, item.pixels))
                if len(pending) >= ANALYSIS_BATCH:
                    run(forward)
            yield index + 1, not pending
        if pending:
            run(forward)
