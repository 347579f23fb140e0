"""The exemplar pass: each layer's receptive field, then the dataset once through the truncated network.

Each layer's receptive field is measured (once per atlas); the dataset is cut into
:class:`~filterscope.atlas.scan.PassShard` tasks, which the executor runs with
:func:`~filterscope.atlas.scan.scan_shard`; their outcomes are merged in order into a :class:`PassState` (exact:
see :mod:`~filterscope.atlas.exemplars`), which keeps the per-image means and maxima in memory-mapped ``.npy``
files and checkpoints itself between shards every ``checkpoint_seconds``; a killed pass resumes from its
checkpoint. A failed shard stops the build (the pass cannot go on without it; the next build resumes). Records:
each unit's statistics, histogram, co-firing and exemplars with their receptive-field boxes; the activation
atlas's samples when the build asked for a map (:class:`~.maps.SampleWriter`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from ...analysis.receptive_field import ReceptiveField, receptive_field
from ...errors import AtlasError
from ...files import atomic_write, open_matrix
from ...layers import layer_slug
from ...maps.samples import SampleSpec
from ...zoo.model import LoadedModel
from ..dataset import Dataset
from ..exemplars import UnitTracker, cofiring, histograms
from ..records import NewExemplar, UnitPassStats, UnitStats
from ..scan import PassShard, ShardOutcome, scan_shard
from ..store import AtlasStore
from ..tasks import TaskFailure
from .base import BuildContext, BuildRequest, LayerPlan, NamedFile, Recorded, Stage, register_stage
from .maps import MapLayer, SampleWriter, attributed_classes, sample_stem

__all__ = ["ExemplarStage", "PassState"]


@register_stage
class ExemplarStage(Stage[PassShard, ShardOutcome]):
    """The exemplar pass (see the module docstring): ordered, checkpointed, a failed shard stops the build."""

    name = "exemplars"
    redone = "exemplar pass(es) to run again"
    ordered = True
    stops = True
    counts = "image"
    run = staticmethod(scan_shard)

    def wanted(self, request: BuildRequest) -> bool:
        return request.dataset is not None

    def plan(self, context: BuildContext) -> Sequence[PassShard]:
        raise NotImplementedError("the exemplar pass plans in execute (its shards start at its checkpoint)")

    def record(self, context: BuildContext, task: PassShard, outcome: ShardOutcome | TaskFailure) -> Recorded:
        raise NotImplementedError("the exemplar pass records in execute (merged in order into its state)")

    def execute(self, context: BuildContext) -> None:
        store, request, data = context.store, context.request, context.request.dataset
        assert data is not None
        dataset_id = store.add_dataset(data.source, data.fingerprint, [str(p) for p in data.paths], list(data.hashes))
        settings = {"fit": request.fit, "precision": context.runtime.precision,
                    "input": list(context.loaded.preprocessing.input_shape)}
        text = json.dumps(settings, sort_keys=True)
        passes = {layer.id: store.add_pass(layer.id, dataset_id, text, request.exemplars) for layer in context.plan}
        context.pass_ids = {layer.id: passes[layer.id][0] for layer in context.plan}
        todo = [layer for layer in context.plan if passes[layer.id][1] != "done"]
        report = context.report(self.name)
        report.already = len(context.plan) - len(todo)
        if not todo:
            return
        fields = {layer.id: _receptive_field(store, context.loaded, layer) for layer in todo}
        context.progress.message(f"exemplar pass: {len(data)} images, layer(s) {', '.join(str(x.ref) for x in todo)}")
        spec = request.maps.samples if request.maps is not None else None
        state = PassState(store, todo, {x.id: context.pass_ids[x.id] for x in todo}, len(data), request.exemplars,
                          {x.id: spec for x in todo} if spec is not None else {},
                          attributed_classes(context.loaded, spec) if spec is not None else 0)
        report.per_second = self.run_pass(context, state, data, fields)
        report.done += len(todo)

    def run_pass(self, context: BuildContext, state: PassState, data: Dataset,
                 fields: dict[int, ReceptiveField]) -> float:
        """Run the pass's shards on the executor, merge them in order, checkpoint; images per second."""
        progress, fit = context.progress, context.request.fit
        if state.start:
            progress.message(f"exemplar pass: resuming after image {state.start} of {len(data)} (checkpoint)")
        size, layers = context.executor.shard_images, tuple(str(x.ref) for x in state.layers)
        channels = tuple(x.channels for x in state.layers)
        paths = [str(p) for p in data.paths]
        shards = [PassShard(layers, channels, tuple((i, paths[i]) for i in range(s, min(s + size, len(data)))),
                            state.n, fit, context.runtime, state.specs) for s in range(state.start, len(data), size)]

        def skipped(index: int, error: str) -> None:
            progress.message(f"skipped {data.paths[index]}: {error}")

        def report(done: int) -> None:
            progress.stage(self.name, done, len(data))

        begun = last_save = time.perf_counter()
        for shard, outcome in context.executor.map(scan_shard, context.loaded, shards, ordered=True, report=report):
            if isinstance(outcome, TaskFailure):  # the pass cannot go on without a shard
                raise AtlasError(f"exemplar pass: the shard of images {shard.items[0][0]}-{shard.end - 1} failed: "
                                 f"{outcome.message}")
            state.merge(outcome, skipped)
            report(shard.end)
            if time.perf_counter() - last_save > context.request.checkpoint_seconds and shard.end < len(data):
                state.save(shard.end)
                last_save = time.perf_counter()
        seconds = time.perf_counter() - begun
        state.finish(context.loaded, fields, seconds)
        processed = sum(len(shard.items) for shard in shards)
        return processed / seconds if seconds > 0 else 0.0

    def files(self, conn: sqlite3.Connection) -> Iterator[NamedFile]:
        for p in conn.execute("SELECT p.id, p.means_file, p.maxima_file, l.name FROM passes p JOIN layers l "
                              "ON l.id = p.layer_id WHERE p.status = 'done' ORDER BY p.id"):
            for path in (p["means_file"], p["maxima_file"]):
                if path:
                    yield NamedFile(f"exemplar pass {p['id']} of {p['name']}", path, self.name, (p["id"],))

    def invalidate(self, conn: sqlite3.Connection, keys: set[tuple[int, ...]]) -> None:
        conn.executemany("UPDATE passes SET status = 'pending' WHERE id = ?", sorted(keys))


def _receptive_field(store: AtlasStore, loaded: LoadedModel, layer: LayerPlan) -> ReceptiveField:
    """The layer's receptive field, measured once per atlas (only builds with exemplars need it)."""
    record = store.layer_by_id(layer.id)
    if record.receptive_field is not None:
        return record.receptive_field
    found = receptive_field(loaded, layer.ref)
    store.set_receptive_field(layer.id, found)
    return found


class PassState:
    """What an exemplar pass accumulates for its layers: a tracker per layer, the images x units matrices of
    means and maxima (memory-mapped ``.npy`` files, written under temporary names until the pass is recorded),
    each image's placement, the skipped images; saved to and resumed from a checkpoint file."""

    def __init__(self, store: AtlasStore, layers: list[LayerPlan], pass_ids: dict[int, int], count: int,
                 n: int, samples: dict[int, SampleSpec] | None = None, classes: int = 0) -> None:
        self.store, self.layers, self.pass_ids, self.n = store, layers, pass_ids, n
        self.folder = store.path / "activations"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.checkpoint = self.folder / f"pass-{'-'.join(str(pass_ids[x.id]) for x in layers)}.ckpt"
        self.names = {x.id: (f"pass{pass_ids[x.id]}-{layer_slug(x.ref)}-means.npy",
                             f"pass{pass_ids[x.id]}-{layer_slug(x.ref)}-maxima.npy") for x in layers}
        self.partial = {x.id: tuple(self.folder / f".{name}.partial" for name in self.names[x.id]) for x in layers}
        self.start, state = 0, None
        if self.checkpoint.exists() and all(p.exists() for x in layers for p in self.partial[x.id]):
            try:
                state = torch.load(self.checkpoint, weights_only=True)
                self.start = int(state["done"])
            except Exception:  # a checkpoint that cannot be read is started over
                state, self.start = None, 0
        self.trackers: dict[int, UnitTracker] = {}
        self.matrices: dict[int, tuple[np.memmap, np.memmap]] = {}
        self.placements = (np.full((count, 4), np.nan, dtype=np.float64) if state is None
                           else state["placements"].numpy().copy())
        for x in layers:
            if state is None:
                self.trackers[x.id] = UnitTracker(x.channels, n)
            else:
                self.trackers[x.id] = UnitTracker.from_state_dict(
                    {k.split("/", 1)[1]: v for k, v in state["trackers"].items() if k.startswith(f"{x.id}/")})
            self.matrices[x.id] = tuple(
                open_matrix(p, "w+" if state is None else "r+", np.float32, (count, x.channels))
                for p in self.partial[x.id])
        self.skipped: list[int] = [] if state is None else list(state["skipped"].tolist())
        self.samples: dict[int, SampleWriter] = {}
        for x in layers:
            spec = (samples or {}).get(x.id)
            if spec is None:
                continue
            stem = sample_stem(pass_ids[x.id], str(x.ref), spec)
            resume = state is not None
            if resume and not SampleWriter.started(self.folder, stem):
                continue  # the pass began without samples: the map stage collects them in a pass of its own
            self.samples[x.id] = SampleWriter(self.folder, stem, count,
                                              MapLayer(str(x.ref), x.id, x.channels, x.grid, pass_ids[x.id]), spec,
                                              classes, resume)
        self.specs = tuple(self.samples[x.id].spec if x.id in self.samples else None for x in layers)

    def merge(self, shard: ShardOutcome, on_skip: Callable[[int, str], None]) -> None:
        """Add a shard's outcome (:func:`~filterscope.atlas.tasks.scan_shard`): exact, in shard order."""
        for k, x in enumerate(self.layers):
            self.trackers[x.id].merge(UnitTracker.from_state_dict(shard.trackers[k]))
            indices, means, maxima = shard.rows[k]
            if len(indices):
                self.write_rows(x.id, indices, means, maxima)
            if x.id in self.samples and shard.samples:
                self.samples[x.id].write(shard.samples[k])
        for index, placement in shard.placements.items():
            self.placements[index] = placement
        for index, error in sorted(shard.errors.items()):
            self.skip(index)
            on_skip(index, error)

    def write_rows(self, layer_id: int, indices: np.ndarray, means: np.ndarray, maxima: np.ndarray) -> None:
        matrix_means, matrix_maxima = self.matrices[layer_id]
        matrix_means[indices] = means
        matrix_maxima[indices] = maxima

    def skip(self, index: int) -> None:
        """An image that could not be read: its rows are NaN."""
        self.skipped.append(index)
        for means, maxima in self.matrices.values():
            means[index] = np.nan
            maxima[index] = np.nan

    def save(self, done: int) -> None:
        """Checkpoint after ``done`` images (every batch before them recorded)."""
        for means, maxima in self.matrices.values():
            means.flush()
            maxima.flush()
        for writer in self.samples.values():
            writer.flush()
        payload = {"done": done, "skipped": torch.tensor(self.skipped, dtype=torch.int64),
                   "placements": torch.from_numpy(self.placements.copy()),
                   "trackers": {f"{x.id}/{k}": v for x in self.layers
                                for k, v in self.trackers[x.id].state_dict().items()}}
        atomic_write(self.checkpoint, lambda tmp: torch.save(payload, tmp))

    def finish(self, loaded: LoadedModel, fields: dict[int, ReceptiveField], seconds: float) -> None:
        """Record every layer's pass: statistics, histograms, co-firing, exemplars with their boxes."""
        for x in self.layers:
            means, maxima = self.matrices.pop(x.id)
            means.flush()
            maxima.flush()
            tracker = self.trackers[x.id]
            hists, together = histograms(maxima), cofiring(means)
            stats = [UnitPassStats(u, UnitStats(**tracker.statistics(u), histogram=hists[u]),  # type: ignore[arg-type]
                                   together[u]) for u in range(x.channels)]
            found = self.exemplars(x, tracker, fields[x.id], loaded.preprocessing.input_shape)
            del means, maxima
            for part, name in zip(self.partial[x.id], self.names[x.id]):
                os.replace(part, self.folder / name)
            self.store.finish_pass(self.pass_ids[x.id], stats, found, skipped=len(self.skipped), seconds=seconds,
                                   means_file=f"activations/{self.names[x.id][0]}",
                                   maxima_file=f"activations/{self.names[x.id][1]}")
            if x.id in self.samples:
                self.samples.pop(x.id).finish(self.store, self.pass_ids[x.id])
        self.checkpoint.unlink(missing_ok=True)

    def exemplars(self, x: LayerPlan, tracker: UnitTracker, field: ReceptiveField,
                  input_shape: tuple[int, int]) -> list[NewExemplar]:
        """Each unit's exemplars with the receptive-field box around their maximum, in input pixels and in the
        original image's."""
        rows = []
        for u in range(x.channels):
            for kind in UnitTracker.KINDS:
                for rank, (image, value, position) in enumerate(tracker.exemplars(u, kind)):
                    y, x_pos = divmod(position, x.grid[1]) if len(x.grid) == 2 else (0, position)
                    box = (field.box(y, x_pos, input_shape) if kind != "mean"
                           else (0, 0, input_shape[1], input_shape[0]))
                    sx, sy, ox, oy = self.placements[image]
                    source = [(box[0] - ox) / sx, (box[1] - oy) / sy, (box[2] - ox) / sx, (box[3] - oy) / sy]
                    rows.append(NewExemplar(u, kind, rank, image, value, y, x_pos, list(box),
                                            [round(v, 2) for v in source]))
        return rows
