"""The trust stage of an atlas build: each rendered unit's faithfulness scores and description.

After the renders, for each built layer with a finished exemplar pass, a :class:`TrustTask` holds what the checks
need and nothing heavy: the pass's maxima matrix file (each image's activation of each unit), the dataset's image
paths, each unit's finished render files with their statuses, and the classes the circuits stage found. Its
function, :func:`trust_task`, builds :class:`~filterscope.trust.TrustData` over the dataset (images decoded on
demand: a unit reads its 10 top exemplars, 20 crops and its 2-AFC pools; units of a layer share what they read) and
returns the records (the judge's features of the dataset are kept in the atlas's :data:`JUDGED` folder, so a
later build, or another layer at the same depth, reads them instead of running the independent network over every
image again); :func:`record_trust` stores them (``unit_trust``, one transaction per layer). Units that have
a record are not done again; a build with ``trust=False`` skips the stage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...analysis.inputs import decode_image, decoded
from ...errors import FilterscopeError
from ...images import load_image
from ...layers import resolve_layer
from ...tensors import to_tensor
from ...trust import TrustData, UnitTrust, independent_network, unit_trust
from ...trust.afc import AFC_K
from ...trust.unit import near_classifier
from ...zoo.model import LoadedModel
from ..records import FINISHED, LayerRecord
from ..store import AtlasStore
from ..tasks import Report, TaskFailure, worker_name
from .base import BuildContext, BuildRequest, Recorded, Stage, register_stage

__all__ = ["TrustTask", "TrustOutcome", "trust_task", "record_trust", "trust_tasks", "TrustStage", "JUDGED"]

JUDGED = "judged"
"""The atlas's folder of the judges' features of its datasets (one ``.npy`` per judge, its blocks and dataset):
computed by the first build that needs them, read by every later one."""


@dataclass(frozen=True)
class TrustTask:
    """The trust records of ``units`` of ``layer`` from the pass whose maxima are ``maxima`` (an ``.npy`` file)
    over the images ``paths``, with each unit's render files and statuses ``renders``, and the classes
    each unit promotes and suppresses (``classes``, from the circuits stage)."""

    layer: str
    layer_id: int
    units: tuple[int, ...]
    maxima: str
    paths: tuple[str, ...]
    renders: tuple[tuple[int, tuple[str, ...], str], ...]
    classes: tuple[tuple[int, tuple[tuple[str, float], ...], tuple[tuple[str, float], ...]], ...] = ()
    fit: str = "crop"
    seed: int = 0
    cache: str = ""  # a folder where the judge's features of the dataset are kept between builds


@dataclass(frozen=True)
class TrustOutcome:
    records: tuple[UnitTrust, ...]
    seconds: float
    worker: str = "local"
    message: str | None = None


def trust_task(model: LoadedModel, task: TrustTask, report: Report | None = None) -> TrustOutcome:
    """Do a :class:`TrustTask` (nothing is written); ``report`` receives each unit when it is done."""
    started = time.perf_counter()
    try:
        ref = resolve_layer(model, task.layer)
        values = torch.from_numpy(np.array(np.load(task.maxima, mmap_mode="r"), dtype=np.float32))
        views: dict[int, torch.Tensor] = {}

        def load(indices: Sequence[int]) -> torch.Tensor:
            for i in indices:
                if i not in views:
                    views[i] = decoded(*decode_image(model, task.paths[i], task.fit, None)).pixels
            return torch.stack([views[i] for i in indices])

        judge = independent_network(explained=model.name)
        data = TrustData(model, ref, values, load, judge, seed=task.seed,
                         cache=Path(task.cache) if task.cache else None, dataset=json.dumps([task.paths, task.fit]))
        classes = {u: (up, down) for u, up, down in task.classes}
        records = []
        for unit, files, status in task.renders:
            renders = torch.stack([to_tensor(load_image(f))[0] for f in files]) if files else None
            records.append(unit_trust(data, unit, renders, render_status=status, classes=classes.get(unit)))
            if report is not None:
                report(unit)
    except (FilterscopeError, OSError) as exc:
        return TrustOutcome((), time.perf_counter() - started, worker_name(), str(exc).splitlines()[0])
    return TrustOutcome(tuple(records), time.perf_counter() - started, worker_name())


def record_trust(store: AtlasStore, task: TrustTask, outcome: TrustOutcome | TaskFailure) -> str | None:
    """Store the records; returns why nothing was recorded (``None`` when they were)."""
    if isinstance(outcome, TaskFailure):
        return outcome.message
    if outcome.message is not None:
        return outcome.message
    store.set_unit_trust(task.layer_id, outcome.records)
    return None


def trust_tasks(store: AtlasStore, model: LoadedModel, layers: Sequence[tuple[str, int, list[int], int | None]],
                fit: str, seed: int = 0) -> list[TrustTask]:
    """Plan: ``layers`` as ``(name, layer id, wanted units, finished pass or None)``; a task per layer with a pass
    of enough images, for its wanted units that lack a record (renders or not: without them, the record has the
    2-AFC score of the exemplars and the description). The classes a unit promotes describe it only near the
    classifier (:func:`~filterscope.trust.unit.near_classifier`); further down they rank, but mean little."""
    tasks = []
    for name, layer_id, units, pass_id in layers:
        if pass_id is None:
            continue
        paths = store.pass_images(pass_id)
        have = store.units_with_trust(layer_id)
        missing = [u for u in units if u not in have]
        if len(paths) < 2 * (AFC_K + 1) or not missing:
            continue
        renders = []
        for unit in missing:
            finished = [r for r in store.renders(layer_id, unit) if r.status in FINISHED and r.file is not None]
            files = tuple(str(store.path / str(r.file)) for r in finished)
            status = "not-improved" if any(r.status == "not-improved" for r in finished) else "ok"
            renders.append((unit, files, status))
        classes = []
        for unit in missing if near_classifier(model, resolve_layer(model, name)) else []:
            found = store.circuit_sections(layer_id, unit).classes
            if found is not None:
                up = tuple((c.name or str(c.unit), c.weight) for c in found.promoted)
                down = tuple((c.name or str(c.unit), c.weight) for c in found.suppressed)
                classes.append((unit, up, down))
        maxima = store.path / str(store.pass_maxima_file(pass_id))
        tasks.append(TrustTask(name, layer_id, tuple(missing), str(maxima), tuple(paths), tuple(renders),
                               tuple(classes), fit, seed, str(store.path / JUDGED)))
    return tasks


@register_stage
class TrustStage(Stage[TrustTask, TrustOutcome]):
    """Trust records (see the module docstring), after the renders they judge."""

    name = "trust"
    after = ("renders", "circuits")
    run = staticmethod(trust_task)

    def wanted(self, request: BuildRequest) -> bool:
        return request.trust and request.dataset is not None

    def plan(self, context: BuildContext) -> Sequence[TrustTask]:
        return trust_tasks(context.store, context.loaded,
                           [(str(x.ref), x.id, x.units, context.pass_ids.get(x.id)) for x in context.plan],
                           context.request.fit)

    def size(self, task: TrustTask) -> int:
        return len(task.units)

    def record(self, context: BuildContext, task: TrustTask, outcome: TrustOutcome | TaskFailure) -> Recorded:
        why = record_trust(context.store, task, outcome)
        if why is not None:
            return Recorded(failed=(f"{task.layer}: {why}",))
        return Recorded(len(task.units), message=f"trust: {task.layer}, {len(task.units)} unit(s)")

    def recorded(self, store: AtlasStore, layer: LayerRecord) -> str | None:
        units = store.units_with_trust(layer.id)
        return f"{len(units)} of {layer.channels} units have a trust record" if units else None
