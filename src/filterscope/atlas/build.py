"""Building an atlas: plan what is missing, run the exemplar pass, cut the crops, render the units.

:func:`build_atlas` does only what the atlas does not hold yet, in an order that gives results early:

1. **Plan.** The model is recorded with a fingerprint of its weights, each layer with its shape, each
   wanted render (layer, unit, recipe, seed, runtime settings) with its key
   (:func:`~filterscope.atlas.store.render_key`); renders already in the atlas are not planned again.
2. **Exemplar pass** (with ``dataset``): each layer's receptive field is measured (once per atlas), then one
   forward pass per batch for all the layers that need it,
   decoding in a background thread, a :class:`~filterscope.atlas.exemplars.UnitTracker` per layer, the
   per-image means and maxima written to memory-mapped ``.npy`` files. The pass checkpoints itself every
   ``checkpoint_seconds``; a killed pass resumes from its checkpoint.
3. **Crops** of the exemplars of the wanted units, around the maximum, sized to the receptive field.
4. **Renders**, batch by batch; each image file is written atomically, then its record committed.

One build writes an atlas at a time: it holds ``.build.lock`` in the folder, and a second build waits
for it (then finds the first one's work done).
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..analysis.activations import layer_means
from ..analysis.inputs import decode_image, decoded
from ..analysis.receptive_field import ReceptiveField, receptive_field
from ..errors import AtlasError, ChannelError, FilterscopeError
from ..images import OutputLock, atomic_write, encode_png, remove_stale_parts, write_bytes
from ..layers import LayerRef, layer_info, layer_slug, resolve_layer, slug
from ..metrics import activation_ratio, high_frequency_share, reference_crops, robustness
from ..objectives import Channel
from ..recipes import Recipe, get_recipe
from ..render import iter_render
from ..results import RenderResult, StepInfo
from ..runtime import ANALYSIS_BATCH, Forward, Runtime, prefetch
from ..tensors import to_pil
from ..zoo.preprocessing import Placement
from ..zoo.registry import LoadedModel, coerce_model
from ..zoo.weights import weights_fingerprint
from .dataset import Dataset, list_dataset
from .exemplars import UnitTracker, cofiring, histograms
from .store import AtlasStore, render_key

__all__ = ["BuildProgress", "BuildSummary", "build_atlas", "Executor", "LocalExecutor", "LayerPlan", "RenderGroup",
           "PassState",
           "scan", "render_outcomes", "record_outcomes", "LOCK_NAME", "CROP_SIDE", "THUMBNAIL_SIDE"]

LOCK_NAME = ".build.lock"
THUMBNAIL_SIDE = 96
"""Exemplar thumbnails fit in this many pixels (a web page's grid)."""
CROP_SIDE = 224
"""Exemplar crops larger than this are scaled down to it."""


class BuildProgress:
    """What a build reports, as it goes; the default does nothing (the CLI draws progress bars)."""

    def message(self, text: str) -> None:
        """A line for the user."""

    def pass_progress(self, done: int, total: int) -> None:
        """Images of the exemplar pass done so far."""

    def crops_progress(self, done: int, total: int) -> None:
        """Exemplar images cut so far."""

    def render_started(self, label: str, units: int) -> None:
        """Rendering ``units`` units of one layer, recipe and seed starts."""

    def render_step(self, info: StepInfo) -> None:
        """One Adam step (see :func:`~filterscope.render.iter_render`)."""

    def unit_finished(self, layer: str, unit: int, row: dict[str, Any]) -> None:
        """A render was recorded (``row``: status, activations, scores, file)."""

    def workers(self, units_per_minute: dict[str, float]) -> None:
        """On a cluster: units recorded per minute, by worker."""


@dataclass
class BuildSummary:
    """What a build did.

    Attributes:
        rendered: Renders recorded by this build (ok, inactive or failed).
        failed: Those of them that failed (non-finite values), with their messages.
        already: Renders wanted that the atlas already held (not redone).
        passes: Exemplar passes run (one per layer that needed one).
        pass_images: Images per second of the exemplar pass (0 when none ran).
        crops: Exemplar crops cut.
        seconds: Wall time of the whole build.
        first_render_seconds: From the start of the build to the first render recorded (``None`` when none).
        render_start_seconds: From the start of the build to the start of the first render (planning,
            model fingerprint, receptive fields, skipping what is done; ``None`` when nothing was rendered).
    """

    rendered: int = 0
    failed: list[str] = field(default_factory=list)
    already: int = 0
    passes: int = 0
    pass_images_per_second: float = 0.0
    crops: int = 0
    seconds: float = 0.0
    first_render_seconds: float | None = None
    render_start_seconds: float | None = None


@dataclass(frozen=True)
class LayerPlan:
    """A layer of a build: its reference, atlas id, channel count, wanted units and output grid."""

    ref: LayerRef
    id: int
    channels: int
    units: list[int]
    grid: tuple[int, ...]  # the output's spatial shape at the input size


def _receptive_field(store: AtlasStore, loaded: LoadedModel, layer: LayerPlan) -> ReceptiveField:
    """The layer's receptive field, measured once per atlas (only builds with exemplars need it)."""
    record = next(x for x in store.layers() if x.id == layer.id)
    if record.receptive_field is not None:
        return ReceptiveField.from_dict(record.receptive_field)
    found = receptive_field(loaded, layer.ref)
    store.set_receptive_field(layer.id, found.to_dict())
    return found


def _units_for(units: Sequence[int] | dict[str, Sequence[int]] | None, layer: str, ref: LayerRef,
               channels: int, model: str) -> list[int]:
    wanted = units.get(layer, units.get(str(ref))) if isinstance(units, dict) else units
    chosen = list(range(channels)) if wanted is None else sorted({int(u) for u in wanted})
    bad = [u for u in chosen if not 0 <= u < channels]
    if bad:
        raise ChannelError(f"Unit {bad[0]} is out of range for layer {ref} of {model}, which has {channels} units "
                           f"(0-{channels - 1})")
    return chosen


def _settings(model: LoadedModel, runtime: Runtime) -> dict[str, str]:
    return {"device": str(model.device), "precision": runtime.precision,
            "memory_format": "channels_last" if runtime.wants_channels_last(model.module) else "nchw"}


def build_atlas(atlas: AtlasStore | str | os.PathLike[str], model: LoadedModel | torch.nn.Module,
                layers: str | Sequence[str], *, units: Sequence[int] | dict[str, Sequence[int]] | None = None,
                recipes: Sequence[str | Recipe] = ("paper",), seeds: Sequence[int] = (0,),
                dataset: str | os.PathLike[str] | Dataset | None = None, exemplars: int = 9, scores: bool = True,
                fit: str = "crop", runtime: Runtime | None = None, batch_size: int | None = None,
                retry_failed: bool = False, progress: BuildProgress | None = None,
                checkpoint_seconds: float = 30.0, executor: Executor | None = None) -> BuildSummary:
    """Add to ``atlas`` what it lacks for these layers, units, recipes, seeds and dataset (see the module
    docstring).

    Args:
        atlas: An :class:`AtlasStore` or a folder (created when missing or empty).
        model: The model (a ``LoadedModel`` or any module with ImageNet preprocessing).
        layers: One layer or several, in any accepted form.
        units: Units of every layer (default: all), or ``{layer: units}``.
        recipes: Named recipes, recipe files or :class:`Recipe` objects: one image per unit each.
        seeds: Seeds of the starting noise: one image per unit each.
        dataset: A folder of images (recursive) or a text file listing image paths, for exemplars and
            statistics; ``None``: renders only.
        exemplars: How many exemplars per unit and kind (top by maximum, top by mean, bottom by minimum).
        scores: Compute quality scores (activation ratio, robustness, high-frequency share) of each render.
        fit: How dataset images meet the input: ``crop`` (the model's own preprocessing), ``squash``, ``pad``.
        runtime: Precision, memory format and memory budget.
        batch_size: Images per batch (rendering: from the memory budget; the pass: 4).
        retry_failed: Render again the units whose render failed before.
        progress: Receives progress reports.
        checkpoint_seconds: How often the exemplar pass saves its state.
        executor: Where the pass and the renders run: this process (default, :class:`LocalExecutor`) or a
            Dask cluster (:class:`~filterscope.atlas.distributed.DaskExecutor`); the atlas is written here.
    """
    started = time.perf_counter()
    loaded = coerce_model(model)
    progress = progress or BuildProgress()
    executor = executor or LocalExecutor()
    runtime = runtime or Runtime()
    if exemplars < 1:
        raise AtlasError(f"exemplars must be at least 1 (got {exemplars})")
    if batch_size is not None and batch_size < 1:
        raise AtlasError(f"batch_size must be at least 1 (got {batch_size})")
    layer_names = [layers] if isinstance(layers, str) else list(layers)
    if not layer_names:
        raise AtlasError("No layer given")
    resolved = [(name, resolve_layer(loaded, name)) for name in layer_names]  # every name checked first
    infos = {name: layer_info(loaded, ref) for name, ref in resolved}
    wanted_units = {name: _units_for(units, name, ref, infos[name].channels, loaded.name) for name, ref in resolved}
    recipe_list = [(r, get_recipe(r)) if isinstance(r, str) else (r.name or "custom", r) for r in recipes]
    data = dataset if isinstance(dataset, Dataset) or dataset is None else list_dataset(dataset)
    store = atlas if isinstance(atlas, AtlasStore) else None
    folder = store.path if store is not None else Path(atlas)  # type: ignore[arg-type]

    def waiting(holder: str) -> None:
        progress.message(f"another atlas build ({holder}) is writing {folder}; waiting for it to finish")

    with OutputLock(folder, name=LOCK_NAME, on_wait=waiting):
        # files a killed build was writing (atomic writes: never under their final name) go first
        for part_folder in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
            remove_stale_parts(part_folder)
        store = store or AtlasStore(folder)
        summary = BuildSummary()
        weights_hash = weights_fingerprint(loaded.module)
        model_id = store.add_model(loaded.name, loaded.weights, weights_hash, loaded.info.get("source"),
                                   loaded.preprocessing.to_dict())
        plan: list[LayerPlan] = []
        for name, ref in resolved:
            info = infos[name]
            layer_id = store.add_layer(model_id, str(ref), info.channels, list(info.shape))
            plan.append(LayerPlan(ref, layer_id, info.channels, wanted_units[name], tuple(info.shape[1:])))
        if data is not None:
            _exemplar_stage(store, loaded, plan, data, exemplars, fit, runtime, progress, summary, checkpoint_seconds,
                            executor)
        groups = _plan_renders(store, loaded, weights_hash, plan, recipe_list, list(seeds), scores, runtime,
                               retry_failed, progress, summary)
        if groups:
            summary.render_start_seconds = time.perf_counter() - started
            executor.run_renders(store, loaded, groups, runtime, batch_size, progress, summary, started)
    summary.seconds = time.perf_counter() - started
    return summary


# ----------------------------------------------------------------------------------- exemplar pass
def _exemplar_stage(store: AtlasStore, loaded: LoadedModel, plan: list[LayerPlan], data: Dataset, n: int, fit: str,
                    runtime: Runtime, progress: BuildProgress, summary: BuildSummary, checkpoint_seconds: float,
                    executor: Executor) -> None:
    dataset_id = store.add_dataset(data.source, data.fingerprint, [str(p) for p in data.paths], list(data.hashes))
    settings = {"fit": fit, "precision": runtime.precision, "input": list(loaded.preprocessing.input_shape)}
    passes = {layer.id: store.add_pass(layer.id, dataset_id, settings, n) for layer in plan}
    todo = [layer for layer in plan if passes[layer.id]["status"] != "done"]
    fields = {layer.id: _receptive_field(store, loaded, layer) for layer in todo}
    if todo:
        progress.message(f"exemplar pass: {len(data)} images, layer(s) {', '.join(str(x.ref) for x in todo)}")
        rate = executor.run_pass(store, loaded, todo, fields, {x.id: int(passes[x.id]["id"]) for x in todo}, data,
                                 n, fit, runtime, progress, checkpoint_seconds)
        summary.passes += len(todo)
        summary.pass_images_per_second = rate
    for layer in plan:
        summary.crops += _cut_crops(store, loaded, layer, int(passes[layer.id]["id"]), fit, progress)


def scan(loaded: LoadedModel, refs: Sequence[LayerRef], items: Iterable[tuple[int, str | Path]], fit: str,
         runtime: Runtime, on_batch: Callable[[dict[LayerRef, torch.Tensor], torch.Tensor], None],
         on_image: Callable[[int, Placement | None, Exception | None], None]) -> Iterator[tuple[int, bool]]:
    """The exemplar pass's loop over ``(index, path)`` items: decode in a background thread, run the
    truncated network on batches of :data:`ANALYSIS_BATCH`, hand each batch's activations (on the CPU) and
    dataset indices to ``on_batch``, report each image's placement (or its error) to ``on_image``.

    Yields ``(index + 1, settled)`` after every image; ``settled`` is true when no decoded image waits for a
    batch (a safe point to checkpoint). Used by the local build and by cluster workers alike.
    """

    def decode(item: tuple[int, str | Path]) -> tuple[int, Any]:
        try:
            return item[0], decode_image(loaded, item[1], fit, None)
        except (FilterscopeError, OSError) as exc:
            return item[0], exc

    pending: list[tuple[int, torch.Tensor]] = []

    def run(forward: Forward) -> None:
        indices = torch.tensor([i for i, _ in pending])
        batch = torch.stack([p for _, p in pending]).to(loaded.device)
        acts = forward(loaded.preprocessing.normalize(batch))
        pending.clear()
        on_batch({ref: acts[ref].cpu() for ref in refs}, indices)

    with torch.no_grad(), Forward(loaded, list(refs), runtime) as forward:
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


class PassState:
    """What an exemplar pass accumulates for its layers: a tracker per layer, the images x units matrices of
    means and maxima (memory-mapped ``.npy`` files, written under temporary names until the pass is recorded),
    each image's placement, the skipped images; saved to and resumed from a checkpoint file."""

    def __init__(self, store: AtlasStore, layers: list[LayerPlan], pass_ids: dict[int, int], count: int,
                 n: int) -> None:
        self.store, self.layers, self.pass_ids, self.count = store, layers, pass_ids, count
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
            self.matrices[x.id] = tuple(  # type: ignore[assignment]
                np.lib.format.open_memmap(p, mode="w+" if state is None else "r+", dtype=np.float32,
                                          shape=(count, x.channels)) for p in self.partial[x.id])
        self.skipped: list[int] = [] if state is None else list(state["skipped"].tolist())

    def add_batch(self, acts: dict[LayerRef, torch.Tensor], indices: torch.Tensor) -> None:
        for x in self.layers:
            s = self.trackers[x.id].update(acts[x.ref], indices)
            self.write_rows(x.id, indices.numpy(), s.means.numpy(), s.maxima.numpy())

    def write_rows(self, layer_id: int, indices: np.ndarray, means: np.ndarray, maxima: np.ndarray) -> None:
        matrix_means, matrix_maxima = self.matrices[layer_id]
        matrix_means[indices] = means
        matrix_maxima[indices] = maxima

    def add_image(self, index: int, placement: Placement | None, error: Exception | None) -> None:
        if placement is not None:
            self.placements[index] = (placement.scale_x, placement.scale_y, placement.offset_x, placement.offset_y)
        else:
            self.skipped.append(index)
            for means, maxima in self.matrices.values():
                means[index] = np.nan
                maxima[index] = np.nan

    def save(self, done: int) -> None:
        """Checkpoint after ``done`` images (every batch before them recorded)."""
        for means, maxima in self.matrices.values():
            means.flush()
            maxima.flush()
        payload = {"done": done, "skipped": torch.tensor(self.skipped, dtype=torch.int64),
                   "placements": torch.from_numpy(self.placements.copy()),
                   "trackers": {f"{x.id}/{k}": v for x in self.layers
                                for k, v in self.trackers[x.id].state_dict().items()}}
        atomic_write(self.checkpoint, lambda tmp: torch.save(payload, tmp))

    def finish(self, loaded: LoadedModel, fields: dict[int, ReceptiveField], seconds: float) -> None:
        """Record every layer's pass: statistics, histograms, co-firing, exemplars with their boxes."""
        input_shape = loaded.preprocessing.input_shape
        for x in self.layers:
            means, maxima = self.matrices.pop(x.id)
            means.flush()
            maxima.flush()
            tracker = self.trackers[x.id]
            hists, together = histograms(maxima), cofiring(means)
            stats = [{"unit": u, **tracker.statistics(u), "histogram": hists[u], "cofiring": together[u]}
                     for u in range(x.channels)]
            rows = []
            for u in range(x.channels):
                for kind in UnitTracker.KINDS:
                    for rank, (image, value, position) in enumerate(tracker.exemplars(u, kind)):
                        y, x_pos = divmod(position, x.grid[1]) if len(x.grid) == 2 else (0, position)
                        box = (fields[x.id].box(y, x_pos, input_shape) if kind != "mean"
                               else (0, 0, input_shape[1], input_shape[0]))
                        sx, sy, ox, oy = self.placements[image]
                        source = [(box[0] - ox) / sx, (box[1] - oy) / sy, (box[2] - ox) / sx, (box[3] - oy) / sy]
                        rows.append({"unit": u, "kind": kind, "rank": rank, "image": image, "value": value, "y": y,
                                     "x": x_pos, "box": list(box), "source_box": [round(v, 2) for v in source]})
            del means, maxima
            for part, name in zip(self.partial[x.id], self.names[x.id]):
                os.replace(part, self.folder / name)
            self.store.finish_pass(self.pass_ids[x.id], stats, rows, skipped=len(self.skipped), seconds=seconds,
                                   means_file=f"activations/{self.names[x.id][0]}",
                                   maxima_file=f"activations/{self.names[x.id][1]}")
        self.checkpoint.unlink(missing_ok=True)


def _run_pass(store: AtlasStore, loaded: LoadedModel, layers: list[LayerPlan], fields: dict[int, ReceptiveField],
              pass_ids: dict[int, int], data: Dataset, n: int, fit: str, runtime: Runtime, progress: BuildProgress,
              checkpoint_seconds: float) -> float:
    """One streaming pass for ``layers`` on this machine; returns images per second."""
    state = PassState(store, layers, pass_ids, len(data), n)
    if state.start:
        progress.message(f"exemplar pass: resuming after image {state.start} of {len(data)} (checkpoint)")

    def on_image(index: int, placement: Placement | None, error: Exception | None) -> None:
        state.add_image(index, placement, error)
        if error is not None:
            progress.message(f"skipped {data.paths[index]}: {error}")

    begun = last_save = time.perf_counter()
    items = [(i, data.paths[i]) for i in range(state.start, len(data))]
    for done, settled in scan(loaded, [x.ref for x in layers], items, fit, runtime, state.add_batch, on_image):
        progress.pass_progress(done, len(data))
        if settled and time.perf_counter() - last_save > checkpoint_seconds:
            state.save(done)
            last_save = time.perf_counter()
    seconds = time.perf_counter() - begun
    state.finish(loaded, fields, seconds)
    return len(items) / seconds if seconds > 0 else 0.0


def _jpeg(image: Image.Image, side: int) -> bytes:
    image = image.copy()
    if max(image.size) > side or max(image.size) < side // 2:
        scale = side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _cut_crops(store: AtlasStore, loaded: LoadedModel, layer: LayerPlan, pass_id: int, fit: str,
               progress: BuildProgress) -> int:
    """Crops and thumbnails of the exemplars of ``layer``'s wanted units that have none yet."""
    rows = store.exemplars_without_crops(pass_id, layer.units)
    if not rows:
        return 0
    by_image: dict[str, list[Any]] = {}
    for row in rows:
        by_image.setdefault(row["path"], []).append(row)
    paths = list(by_image)
    done, batch = 0, []

    def load(path: str) -> Image.Image | None:
        try:
            return to_pil(decoded(*decode_image(loaded, path, fit, None)).pixels)
        except (FilterscopeError, OSError):
            return None

    for number, (path, view) in enumerate(zip(paths, prefetch(paths, load)), start=1):
        for row in by_image[path]:
            if view is None:
                continue
            box = json.loads(row["box"])
            crop = view.crop(tuple(box)) if box[2] > box[0] and box[3] > box[1] else view
            batch.append((int(row["id"]), _jpeg(crop, CROP_SIDE if max(crop.size) > CROP_SIDE else max(crop.size)),
                          _jpeg(crop, THUMBNAIL_SIDE)))
        if len(batch) >= 256 or number == len(paths):
            store.set_crops(batch)
            done += len(batch)
            batch = []
        progress.crops_progress(number, len(paths))
    return done


# ------------------------------------------------------------------------------------------ renders
@dataclass
class RenderGroup:
    """Planned renders of one layer with one recipe and seed: ``jobs`` are ``{id, unit, key}`` of the
    atlas's pending rows; ``maxima`` the layer's reference maxima for the quality scores (or ``None``)."""

    layer: LayerPlan
    recipe_name: str
    recipe: Recipe
    seed: int
    jobs: list[dict[str, Any]]
    maxima: torch.Tensor | None


def _plan_renders(store: AtlasStore, loaded: LoadedModel, weights_hash: str, plan: list[LayerPlan],
                  recipes: list[tuple[str, Recipe]], seeds: list[int], scores: bool, runtime: Runtime,
                  retry_failed: bool, progress: BuildProgress, summary: BuildSummary) -> list[RenderGroup]:
    """Record every wanted render (pending unless the atlas has it) and return what is left to do."""
    settings = _settings(loaded, runtime)
    references = None
    groups = []
    for layer in plan:
        maxima = None
        for recipe_name, recipe in recipes:
            recipe_json = recipe.to_json()
            for seed in seeds:
                rows: list[dict[str, Any]] = []
                for unit in layer.units:
                    objective = Channel(layer.ref, unit).description
                    rows.append({"layer_id": layer.id, "unit": unit, "objective": objective,
                                 "recipe_name": recipe_name, "recipe": recipe_json, "seed": seed,
                                 "settings": json.dumps(settings, sort_keys=True),
                                 "key": render_key(weights_hash, str(layer.ref), unit, objective, recipe_json, seed,
                                                   settings)})
                store.add_renders(rows)
                pending = store.pending_renders([r["key"] for r in rows], retry_failed)
                summary.already += len(rows) - len(pending)
                if not pending:
                    continue
                if scores and references is None:
                    references = _references(loaded, progress)
                if scores and maxima is None and references is not None and references.numel():
                    maxima = layer_means(loaded, layer.ref, references, runtime=runtime).amax(dim=0).clamp(min=1e-6)
                jobs = [{"id": int(row["id"]), "unit": int(row["unit"]), "key": row["key"]} for row in pending]
                groups.append(RenderGroup(layer, recipe_name, recipe, seed, jobs, maxima))
    return groups


class Executor:
    """Where a build's heavy work runs; the atlas itself is always written by the building process."""

    def run_pass(self, store: AtlasStore, loaded: LoadedModel, layers: list[LayerPlan],
                 fields: dict[int, ReceptiveField], pass_ids: dict[int, int], data: Dataset, n: int, fit: str,
                 runtime: Runtime, progress: BuildProgress, checkpoint_seconds: float) -> float:
        """Run and record the exemplar pass of ``layers``; return images per second."""
        raise NotImplementedError

    def run_renders(self, store: AtlasStore, loaded: LoadedModel, groups: list[RenderGroup], runtime: Runtime,
                    batch_size: int | None, progress: BuildProgress, summary: BuildSummary, started: float) -> None:
        """Render and record every planned render of ``groups``."""
        raise NotImplementedError


class LocalExecutor(Executor):
    """This process: the pass with checkpoints (:func:`_run_pass`), the renders group by group."""

    def run_pass(self, store: AtlasStore, loaded: LoadedModel, layers: list[LayerPlan],
                 fields: dict[int, ReceptiveField], pass_ids: dict[int, int], data: Dataset, n: int, fit: str,
                 runtime: Runtime, progress: BuildProgress, checkpoint_seconds: float) -> float:
        return _run_pass(store, loaded, layers, fields, pass_ids, data, n, fit, runtime, progress, checkpoint_seconds)

    def run_renders(self, store: AtlasStore, loaded: LoadedModel, groups: list[RenderGroup], runtime: Runtime,
                    batch_size: int | None, progress: BuildProgress, summary: BuildSummary, started: float) -> None:
        for group in groups:
            progress.render_started(f"{group.layer.ref} {group.recipe_name} seed {group.seed}", len(group.jobs))
            for outcomes in render_outcomes(loaded, group.layer.ref, group.jobs, group.recipe, group.recipe_name,
                                            group.seed, runtime, batch_size, group.maxima, progress.render_step):
                record_outcomes(store, loaded.name, str(group.layer.ref), outcomes, progress, summary, started)


def _references(loaded: LoadedModel, progress: BuildProgress) -> torch.Tensor:
    try:
        return reference_crops(loaded)
    except FilterscopeError as exc:
        progress.message(f"no quality scores: {exc}")
        return torch.zeros(0)


def render_outcomes(loaded: LoadedModel, ref: LayerRef, jobs: list[dict[str, Any]], recipe: Recipe, recipe_name: str,
                    seed: int, runtime: Runtime, batch_size: int | None, maxima: torch.Tensor | None,
                    callback: Callable[[StepInfo], None] | None = None) -> Iterator[list[dict[str, Any]]]:
    """Render the planned renders ``jobs`` (``id``, ``unit``, ``key``) of one layer, recipe and seed; yield
    each batch's outcomes: the record's values, quality scores (with ``maxima``, the layer's reference
    maxima), and the image file's name and bytes (PNG with metadata; ``.npy`` for other than 1 or 3
    channels). Nothing is written: :func:`record_outcomes` does that, here or on a cluster's client."""
    objectives = [Channel(ref, job["unit"]) for job in jobs]
    queue = list(jobs)
    for result in iter_render(loaded, objectives, recipe=recipe, seed=seed, batch_size=batch_size, runtime=runtime,
                              callback=callback):
        yield [_outcome(result, i, queue.pop(0), recipe_name, seed, maxima, loaded) for i in range(len(result))]


def record_outcomes(store: AtlasStore, model_name: str, layer: str, outcomes: list[dict[str, Any]],
                    progress: BuildProgress, summary: BuildSummary, started: float) -> None:
    """Write each outcome's files atomically, then commit their records in one transaction."""
    folder = store.path / "renders" / slug(model_name) / layer_slug(layer)
    rows = []
    for outcome in outcomes:
        row = {k: v for k, v in outcome.items() if k not in ("png", "npy", "name")}
        if outcome.get("npy") is not None:
            row["array_file"] = str(write_bytes(folder / f"{outcome['name']}.npy", outcome["npy"])
                                    .relative_to(store.path))
        if outcome.get("png") is not None:
            row["file"] = str(write_bytes(folder / f"{outcome['name']}.png", outcome["png"]).relative_to(store.path))
        rows.append(row)
    store.finish_renders(rows)
    if summary.first_render_seconds is None:
        summary.first_render_seconds = time.perf_counter() - started
    for row in rows:
        summary.rendered += 1
        if row["status"] == "failed":
            summary.failed.append(f"{layer} unit {row['unit']}: {row['message']}")
        progress.unit_finished(layer, row["unit"], row)


def _outcome(result: RenderResult, i: int, job: dict[str, Any], recipe_name: str, seed: int,
             maxima: torch.Tensor | None, loaded: LoadedModel) -> dict[str, Any]:
    unit = int(job["unit"])
    status = result.status[i] if result.status else "ok"
    out: dict[str, Any] = {"id": int(job["id"]), "unit": unit, "status": "failed" if status == "non-finite" else status,
                           "initial_activation": float(result.initial_values[i]),
                           "final_activation": float(result.values[i]), "activation_ratio": None, "robustness": None,
                           "high_frequency_share": None, "file": None, "array_file": None,
                           "seconds": result.seconds / max(len(result), 1), "message": None,
                           "name": f"u{unit:04d}-{slug(recipe_name)}-s{seed}-{job['key'][:8]}", "png": None,
                           "npy": None}
    if status == "non-finite" or not math.isfinite(out["final_activation"]):
        out["status"] = "failed"
        out["message"] = "the optimization produced NaN or infinity (lower the learning rate, check the model)"
        return out
    image = result.images[i:i + 1]
    if maxima is not None:
        objective = result.objectives[i]
        reference = float(maxima[unit])
        out["activation_ratio"] = float(activation_ratio(loaded, objective, image, reference)[0])
        out["robustness"] = float(robustness(loaded, objective, image, reference, seed=seed)[0])
    out["high_frequency_share"] = float(high_frequency_share(image)[0])
    meta = result.metadata(i)
    if result.images.shape[1] not in (1, 3):
        buffer = io.BytesIO()
        np.save(buffer, result.images[i].numpy().astype(np.float32))
        out["npy"] = buffer.getvalue()
        meta["array"] = f"{out['name']}.npy"
    out["png"] = encode_png(result.pil(i), meta)
    return out
