"""The activation-atlas stages of a build: samples, layout, cells, icons (see :mod:`filterscope.maps`).

1. **Samples** (stage ``map-samples``). The exemplar pass collects them (:class:`SampleWriter`, memory-mapped
   ``.npy`` files under temporary names until the pass is recorded, checkpointed with it). A layer whose pass is
   already done without them gets a pass of its own over the same images (:func:`collect_samples`, said so to
   the user), which checkpoints too.
2. **Layout and cells** (``map-layout``, :func:`lay_out_map`): the samples laid out (UMAP, cosine), normalized,
   binned; each kept cell labelled with the class most of its members are attributed to; recorded with the
   map's key (its samples, the weights and every setting), so a map is laid out once.
3. **Icons** (``map-icons``): :class:`~filterscope.maps.icons.IconTask` s of one batch each, on the build's
   executor; each icon file is written (atomically) before its record; a killed build renders only the icons it
   lacks; a failed task's cells are recorded ``failed`` (and rendered by the next build).

Each stage reads what the one before it recorded from the atlas, not from memory, so each can run alone.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from ...errors import AtlasError
from ...files import atomic_write_text, open_matrix, write_bytes
from ...images import save_array
from ...layers import layer_slug, slug
from ...maps.icons import IconJob, IconTask, IconTaskOutcome, icon_recipe, icon_task, second_moment, whitening
from ...maps.layout import bin_cells, lay_out, normalize_layout
from ...maps.samples import SampleRows, SampleSpec, per_image
from ...maps.settings import MapSettings
from ...runtime.core import Runtime
from ...zoo.model import LoadedModel
from ..executors import Executor
from ..map_store import FinishedIcon, MapRecord, MapSamplesRecord, NewCell
from ..scan import PassShard, scan_shard
from ..store import AtlasStore
from ..tasks import TaskFailure
from .base import BuildContext, BuildRequest, NamedFile, Recorded, Stage, register_stage

__all__ = ["SampleWriter", "MapLayer", "collect_samples", "lay_out_map", "icon_tasks", "record_icons", "sample_labels",
           "sample_stem",
           "attributed_classes", "ICONS_PER_TASK", "TRUST_SAMPLE", "MapSamplesStage", "MapLayoutStage", "MapIconsStage"]

T = TypeVar("T")
R = TypeVar("R")

ICONS_PER_TASK = 8
"""Icons rendered in one batch (one task)."""
TRUST_SAMPLE = 2000
"""The layout's trustworthiness is measured on a seeded subset of this many samples (it is quadratic)."""


@dataclass(frozen=True)
class MapLayer:
    """A built layer the map stage works on: name, atlas id, channels, output grid, its finished pass."""

    layer: str
    id: int
    channels: int
    grid: tuple[int, ...]
    pass_id: int


class SampleWriter:
    """A layer's activation samples of one pass, written into memory-mapped ``.npy`` files (under temporary
    names until :meth:`finish`): vectors ``(rows, C)``, places ``(rows, 3)`` (image, y, x; image -1 for rows
    not written: a skipped image), top classes and attributions ``(rows, K)``."""

    NAMES = ("vectors", "places", "classes", "attributions")

    def __init__(self, folder: Path, stem: str, images: int, layer: MapLayer, spec: SampleSpec, classes: int,
                 resume: bool) -> None:
        self.folder, self.spec = folder, spec
        self.per = per_image(layer.grid, spec.positions)
        self.width = int(layer.grid[1]) if len(layer.grid) >= 2 else 1
        self.final = {n: folder / f"{stem}-{n}.npy" for n in self.NAMES}
        self.partial = {n: folder / f".{stem}-{n}.npy.partial" for n in self.NAMES}
        rows = images * self.per
        shapes = {"vectors": ((rows, layer.channels), np.float32), "places": ((rows, 3), np.int32),
                  "classes": ((rows, classes), np.int32), "attributions": ((rows, classes), np.float32)}
        mode = "r+" if resume else "w+"
        folder.mkdir(parents=True, exist_ok=True)
        self.arrays = {n: open_matrix(self.partial[n], mode, dtype, shape) for n, (shape, dtype) in shapes.items()}
        if not resume:
            self.arrays["places"][:] = -1
            self.arrays["classes"][:] = -1

    @classmethod
    def started(cls, folder: Path, stem: str) -> bool:
        """Whether a killed pass left these samples' files under their temporary names (to resume them)."""
        return all((folder / f".{stem}-{n}.npy.partial").exists() for n in cls.NAMES)

    def write(self, rows: SampleRows | None) -> None:
        if rows is None or not len(rows.places):
            return
        places = rows.places
        index = places[:, 0] * self.per + (places[:, 1] * self.width + places[:, 2] if self.per > 1 else 0)
        self.arrays["vectors"][index] = rows.vectors
        self.arrays["places"][index] = places
        k = min(self.arrays["classes"].shape[1], rows.classes.shape[1])
        if k:
            self.arrays["classes"][index, :k] = rows.classes[:, :k]
            self.arrays["attributions"][index, :k] = rows.attributions[:, :k]

    def flush(self) -> None:
        for array in self.arrays.values():
            array.flush()

    def finish(self, store: AtlasStore, pass_id: int) -> int:
        """Flush, move the files to their names, record them; the samples' id."""
        self.flush()
        count = int((self.arrays["places"][:, 0] >= 0).sum())
        self.arrays.clear()
        for name in self.NAMES:
            os.replace(self.partial[name], self.final[name])
        files = [str(self.final[n].relative_to(store.path)) for n in self.NAMES]
        return store.add_map_samples(pass_id, self.spec.positions, self.spec.seed, count, files)


def map_folder(store: AtlasStore, model: str, layer: str) -> Path:
    """Where the maps of a layer keep their files: ``OUT/maps/MODEL/LAYER/``."""
    return store.path / "maps" / slug(model) / layer_slug(layer)


def sample_stem(pass_id: int, layer: str, spec: SampleSpec) -> str:
    return f"pass{pass_id}-{layer_slug(layer)}-samples-{spec.positions}-s{spec.seed}"


def attributed_classes(loaded: LoadedModel, spec: SampleSpec) -> int:
    """How many classes each sample is attributed to: none for a model without class names."""
    return min(spec.classes, len(loaded.categories)) if loaded.categories else 0


def collect_samples(store: AtlasStore, loaded: LoadedModel, executor: Executor, runtime: Runtime, layer: MapLayer, *,
                    spec: SampleSpec, fit: str, report: Callable[[int, int], None],
                    checkpoint_seconds: float = 30.0) -> int:
    """A pass over the images of ``layer``'s finished exemplar pass that collects only the map's samples (for a
    pass that ran without them); checkpointed, resumed. The samples' id."""
    paths = store.pass_images(layer.pass_id)
    folder = store.path / "activations"
    stem = sample_stem(layer.pass_id, layer.layer, spec)
    progress = folder / f".{stem}.progress"
    start = 0
    if progress.exists() and SampleWriter.started(folder, stem):
        try:
            start = int(json.loads(progress.read_text())["done"])
        except (ValueError, KeyError, OSError):
            start = 0
    writer = SampleWriter(folder, stem, len(paths), layer, spec, attributed_classes(loaded, spec), resume=start > 0)
    size = executor.shard_images
    shards = [PassShard((layer.layer,), (layer.channels,), tuple((i, paths[i]) for i in range(s, min(s + size,
                                                                                                     len(paths)))),
                        1, fit, runtime, (spec,)) for s in range(start, len(paths), size)]
    last = time.perf_counter()
    for shard, outcome in executor.map(scan_shard, loaded, shards, ordered=True,
                                       report=lambda d: report(d, len(paths))):
        if isinstance(outcome, TaskFailure):
            raise AtlasError(f"map samples: the shard of images {shard.items[0][0]}-{shard.end - 1} failed: "
                             f"{outcome.message}")
        writer.write(outcome.samples[0] if outcome.samples else None)
        report(shard.end, len(paths))
        if time.perf_counter() - last > checkpoint_seconds:
            writer.flush()
            atomic_write_text(progress, json.dumps({"done": shard.end}))
            last = time.perf_counter()
    samples_id = writer.finish(store, layer.pass_id)
    progress.unlink(missing_ok=True)
    return samples_id


# ---------------------------------------------------------------------------------------- layout
def sample_labels(classes: np.ndarray, attributions: np.ndarray) -> np.ndarray:
    """Each sample's top attributed class (-1 without attributions)."""
    if classes.shape[1] == 0:
        return np.full(len(classes), -1, dtype=np.int64)
    best = np.argmax(np.asarray(attributions), axis=1)
    return np.asarray(classes)[np.arange(len(classes)), best].astype(np.int64)


def _chosen(settings: MapSettings, valid: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The samples a map lays out: every valid one, those of one class, or those of either compared class."""
    keep = valid.copy()
    if settings.label_class is not None:
        keep &= labels == settings.label_class
    if settings.compare is not None:
        a, b = settings.compare
        keep &= (classes == a).any(axis=1) & (classes == b).any(axis=1)
    idx = np.flatnonzero(keep)
    if len(idx) > settings.max_samples:
        rng = np.random.default_rng(settings.seed)
        idx = np.sort(rng.choice(idx, settings.max_samples, replace=False))
    return idx


def _compare_layout(settings: MapSettings, vectors: np.ndarray, classes: np.ndarray,
                    attributions: np.ndarray) -> np.ndarray:
    """The two-class comparison: x the rank of the attribution to ``a`` minus ``b``, y a 1-D UMAP."""
    a, b = settings.compare  # type: ignore[misc]
    to = [np.where(classes == c, attributions, 0.0).sum(axis=1) for c in (a, b)]
    difference = to[0] - to[1]
    x = np.argsort(np.argsort(difference, kind="stable"), kind="stable") / max(len(difference) - 1, 1)
    y = lay_out(vectors, method=settings.layout, n_neighbors=settings.n_neighbors, min_dist=settings.min_dist,
                seed=settings.seed)[:, 1]
    return np.stack([x, y], axis=1).astype(np.float32)


def _trustworthiness(vectors: np.ndarray, coords: np.ndarray, seed: int) -> float | None:
    from sklearn.manifold import trustworthiness

    n = len(vectors)
    if n < 25:
        return None
    idx = np.random.default_rng(seed).choice(n, min(n, TRUST_SAMPLE), replace=False)
    return float(trustworthiness(vectors[idx], coords[idx], n_neighbors=min(10, len(idx) // 2 - 1), metric="cosine"))


def lay_out_map(store: AtlasStore, loaded: LoadedModel, layer: MapLayer, samples: MapSamplesRecord,
                settings: MapSettings, key: str) -> MapRecord:
    """Lay the samples out, bin them, label the cells, write the files and record the map (icons pending)."""
    started = time.perf_counter()
    load = {n: np.load(store.path / getattr(samples, f"{n}_file"), mmap_mode="r") for n in SampleWriter.NAMES}
    valid = np.asarray(load["places"][:, 0]) >= 0
    classes, attributions = np.asarray(load["classes"]), np.asarray(load["attributions"])
    labels = sample_labels(classes, attributions)
    idx = _chosen(settings, valid, labels, classes)
    if len(idx) <= settings.min_count:
        what = settings.describe()
        raise AtlasError(f"The map of {layer.layer} ({what}) has {len(idx)} samples: too few for a map "
                         f"(more than {settings.min_count} per cell are needed)")
    vectors = np.asarray(load["vectors"][idx], dtype=np.float32)
    if settings.compare is not None:
        coords = _compare_layout(settings, vectors, classes[idx], attributions[idx])
    else:
        coords = normalize_layout(lay_out(vectors, method=settings.layout, n_neighbors=settings.n_neighbors,
                                          min_dist=settings.min_dist, seed=settings.seed))
    assignment, cells = bin_cells(coords, vectors, settings.grid, settings.min_count)
    if not cells:
        raise AtlasError(f"No cell of the {settings.grid}x{settings.grid} map of {layer.layer} has more than "
                         f"{settings.min_count} samples: use a smaller --grid")
    trust = _trustworthiness(vectors, coords, settings.seed) if settings.compare is None else None
    names = loaded.categories or ()
    new = []
    for c in cells:
        cell = c.row * settings.grid + c.col
        member_labels = labels[idx[c.members]]
        member_labels = member_labels[member_labels >= 0]
        label, share = None, None
        if len(member_labels):
            counts = np.bincount(member_labels)
            label, share = int(counts.argmax()), float(counts.max() / len(member_labels))
        name = names[label] if label is not None and label < len(names) else None
        new.append(NewCell(cell, c.row, c.col, c.count, label, name, share, f"{key[:16]}-{cell}"))
    folder = map_folder(store, loaded.name, layer.layer)
    full_coords = np.full((len(valid), 2), np.nan, dtype=np.float32)
    full_coords[idx] = coords
    full_cells = np.full(len(valid), -1, dtype=np.int32)
    full_cells[idx] = assignment
    files = []
    for name, array in (("layout", full_coords), ("cells", full_cells),
                        ("means", np.stack([c.mean for c in cells]).astype(np.float32))):
        path = save_array(array, folder / f"map-{key[:12]}-{name}.npy")  # atomically, folders made
        files.append(str(path.relative_to(store.path)))
    map_id = store.add_map(samples.id, key, settings, files, trust, time.perf_counter() - started, new)
    return store.map_by_id(map_id)


# ----------------------------------------------------------------------------------------- icons
def icon_tasks(store: AtlasStore, layer: MapLayer, record: MapRecord, settings: MapSettings,
               runtime: Runtime) -> list[IconTask]:
    """The map's cells without an icon, in tasks of :data:`ICONS_PER_TASK`."""
    cells = store.map_cells(record.id)
    pending = [c for c in cells if c.file is None]
    if not pending:
        return []
    samples = store.map_samples_by_id(record.samples_id)
    vectors = np.load(store.path / samples.vectors_file, mmap_mode="r")
    valid = np.flatnonzero(np.load(store.path / samples.places_file, mmap_mode="r")[:, 0] >= 0)
    inverse = whitening(second_moment(vectors[valid]))
    means = np.load(store.path / record.means_file)
    order = {c.cell: k for k, c in enumerate(cells)}
    jobs = []
    for c in pending:
        mean = means[order[c.cell]].astype(np.float64)
        direction = inverse @ mean
        if not np.any(direction):
            direction = mean + 1e-6
        jobs.append(IconJob(c.cell, c.key, tuple(float(v) for v in direction), tuple(float(v) for v in mean)))
    recipe = icon_recipe(settings.recipe, settings.icon_size)
    return [IconTask(layer.layer, tuple(jobs[s:s + ICONS_PER_TASK]), recipe, settings.seed, runtime, settings.power)
            for s in range(0, len(jobs), ICONS_PER_TASK)]


def record_icons(store: AtlasStore, loaded: LoadedModel, record: MapRecord, task: IconTask,
                 outcome: IconTaskOutcome) -> int:
    """Write a task's icons (files first, then their records); how many were recorded."""
    folder = map_folder(store, loaded.name, task.layer) / f"icons-{record.key[:12]}"
    finished = []
    for o in outcome.outcomes:
        path = write_bytes(folder / f"cell{o.cell:04d}.png", o.png)
        finished.append(FinishedIcon(o.cell, str(path.relative_to(store.path)), o.status, o.initial, o.final,
                                     o.cosine))
    store.finish_icons(record.id, finished)
    return len(finished)


def _layers(context: BuildContext) -> list[MapLayer]:
    """Each built layer with the exemplar pass its map comes from (this build's, else the latest finished)."""
    layers = []
    for x in context.plan:
        latest = context.store.latest_pass(x.id)
        pass_id = context.pass_ids.get(x.id) or (latest.id if latest is not None else None)
        if pass_id is None:
            raise AtlasError(f"The map of {x.ref} needs an exemplar pass over a dataset: build it with --images DIR "
                             "(the samples come from the pass)")
        layers.append(MapLayer(str(x.ref), x.id, x.channels, x.grid, pass_id))
    return layers


def _map_of(context: BuildContext, layer: MapLayer) -> tuple[MapSamplesRecord, str]:
    """The layer's samples (collected by now) and its map's key."""
    settings = context.request.maps
    assert settings is not None
    samples = context.store.map_samples(layer.pass_id, settings.samples.positions, settings.samples.seed)
    if samples is None:
        raise AtlasError(f"The map of {layer.layer} has no samples (the map-samples stage did not run)")
    return samples, settings.key(samples.id, context.weights_hash)


class _MapStage(Stage[T, R]):
    def wanted(self, request: BuildRequest) -> bool:
        return request.maps is not None


@register_stage
class MapSamplesStage(_MapStage[MapLayer, int]):
    """The map's samples: the exemplar pass collects them; a layer whose pass ran without them gets a pass of its
    own over the same images (:func:`collect_samples`), said so to the user."""

    name = "map-samples"
    redone = "activation atlas sample set(s) to collect again"
    after = ("exemplars", "renders")
    counts = "image"

    def plan(self, context: BuildContext) -> Sequence[MapLayer]:
        settings = context.request.maps
        assert settings is not None
        spec = settings.samples
        return [x for x in _layers(context) if context.store.map_samples(x.pass_id, spec.positions, spec.seed) is None]

    def record(self, context: BuildContext, task: MapLayer, outcome: int | TaskFailure) -> Recorded:
        raise NotImplementedError("samples are collected and recorded in execute (a checkpointed pass)")

    def files(self, conn: sqlite3.Connection) -> Iterator[NamedFile]:
        for s in conn.execute("SELECT * FROM map_samples ORDER BY id"):
            for column in ("vectors_file", "places_file", "classes_file", "attributions_file"):
                yield NamedFile(f"activation atlas samples {s['id']}", s[column], self.name, (s["id"],))

    def invalidate(self, conn: sqlite3.Connection, keys: set[tuple[int, ...]]) -> None:
        """The samples and every map laid out from them."""
        maps: set[tuple[int, ...]] = {(int(row[0]),) for (samples_id,) in keys
                for row in conn.execute("SELECT id FROM maps WHERE samples_id = ?", (samples_id,))}
        MapLayoutStage().invalidate(conn, maps)
        conn.executemany("DELETE FROM map_samples WHERE id = ?", sorted(keys))

    def execute(self, context: BuildContext) -> None:
        settings = context.request.maps
        assert settings is not None
        for layer in self.plan(context):
            context.progress.message(f"map of {layer.layer}: the exemplar pass has no samples ({settings.positions} "
                                     "positions); collecting them in a pass of their own")
            collect_samples(context.store, context.loaded, context.executor, context.runtime, layer,
                            spec=settings.samples, fit=context.request.fit,
                            report=lambda d, t: context.progress.stage(self.name, d, t),
                            checkpoint_seconds=context.request.checkpoint_seconds)
            context.report(self.name).done += 1


@register_stage
class MapLayoutStage(_MapStage[MapLayer, MapRecord]):
    """Each map's layout and cells (:func:`lay_out_map`), once per key (samples, weights, settings)."""

    name = "map-layout"
    redone = "activation atlas(es) to lay out again"
    after = ("map-samples",)
    counts = "map"

    def plan(self, context: BuildContext) -> Sequence[MapLayer]:
        return _layers(context)

    def record(self, context: BuildContext, task: MapLayer, outcome: MapRecord | TaskFailure) -> Recorded:
        raise NotImplementedError("maps are laid out and recorded in execute (in this process)")

    def files(self, conn: sqlite3.Connection) -> Iterator[NamedFile]:
        for m in conn.execute("SELECT * FROM maps ORDER BY id"):
            for column in ("layout_file", "cells_file", "means_file"):
                yield NamedFile(f"activation atlas {m['id']}", m[column], self.name, (m["id"],))

    def invalidate(self, conn: sqlite3.Connection, keys: set[tuple[int, ...]]) -> None:
        """The maps and their cells (laid out again by the next build)."""
        for (map_id,) in sorted(keys):
            conn.execute("DELETE FROM map_cells WHERE map_id = ?", (map_id,))
            conn.execute("DELETE FROM maps WHERE id = ?", (map_id,))

    def execute(self, context: BuildContext) -> None:
        settings, report = context.request.maps, context.report(self.name)
        assert settings is not None
        for layer in self.plan(context):
            samples, key = _map_of(context, layer)
            if context.store.map_by_key(key) is not None:
                report.already += 1
                continue
            context.progress.message(f"map of {layer.layer}: laying out {samples.count} samples "
                                     f"({settings.describe()})")
            lay_out_map(context.store, context.loaded, layer, samples, settings, key)
            report.done += 1


@register_stage
class MapIconsStage(_MapStage[IconTask, IconTaskOutcome]):
    """Each map's icons, in tasks of :data:`ICONS_PER_TASK` on the build's executor; a failed task's cells are
    recorded ``failed`` without an icon (counted by ``atlas status``), and the next build renders them again."""

    name = "map-icons"
    redone = "activation atlas icon(s) to render again"
    after = ("map-layout",)
    counts = "icon"
    run = staticmethod(icon_task)

    def plan(self, context: BuildContext) -> Sequence[IconTask]:
        settings = context.request.maps
        assert settings is not None
        tasks = []
        for layer in _layers(context):
            record = context.store.map_by_key(_map_of(context, layer)[1])
            if record is not None:
                tasks += icon_tasks(context.store, layer, record, settings, context.runtime)
        return tasks

    def size(self, task: IconTask) -> int:
        return len(task.jobs)

    def record(self, context: BuildContext, task: IconTask, outcome: IconTaskOutcome | TaskFailure) -> Recorded:
        layer = next(x for x in _layers(context) if x.layer == task.layer)
        record = context.store.map_by_key(_map_of(context, layer)[1])
        assert record is not None
        if isinstance(outcome, TaskFailure):
            context.store.finish_icons(record.id, [FinishedIcon(job.cell, None, "failed", math.nan, math.nan, math.nan)
                                                   for job in task.jobs])
            return Recorded(failed=(f"{task.label}: {outcome.message} (rendered again by the next build)",))
        return Recorded(record_icons(context.store, context.loaded, record, task, outcome))

    def files(self, conn: sqlite3.Connection) -> Iterator[NamedFile]:
        for c in conn.execute("SELECT map_id, cell, file FROM map_cells WHERE file IS NOT NULL ORDER BY map_id, cell"):
            yield NamedFile(f"icon of cell {c['cell']} of activation atlas {c['map_id']}", c["file"], self.name,
                            (c["map_id"], c["cell"]))

    def invalidate(self, conn: sqlite3.Connection, keys: set[tuple[int, ...]]) -> None:
        conn.executemany("UPDATE map_cells SET file = NULL, status = NULL, finished = NULL WHERE map_id = ? AND "
                         "cell = ?", sorted(keys))
