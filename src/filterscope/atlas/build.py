"""Building an atlas: plan what is missing, turn it into typed tasks, let an executor run them, record.

:func:`build_atlas` does only what the atlas does not hold yet, in an order that gives results early:

1. **Plan.** The model is recorded with a fingerprint of its weights, each layer with its shape, each
   wanted render with its identity (:class:`~filterscope.identity.RenderIdentity`); renders already in the
   atlas are not planned again.
2. **Exemplar pass** (with ``dataset``): each layer's receptive field is measured (once per atlas); the
   dataset is cut into :class:`~filterscope.atlas.tasks.PassShard` tasks, which the executor runs with
   :func:`~filterscope.atlas.tasks.scan_shard`; their outcomes are merged in order into a
   :class:`PassState` (exact: see :mod:`~filterscope.atlas.exemplars`), which keeps the per-image means and
   maxima in memory-mapped ``.npy`` files and checkpoints itself between shards every
   ``checkpoint_seconds``; a killed pass resumes from its checkpoint.
3. **Crops** of the exemplars of the wanted units, around the maximum, sized to the receptive field.
4. **Circuits** (``circuits=True``): each built layer's units from the one built before it, what they feed,
   the classes they push (:mod:`.circuits`: a :class:`~filterscope.atlas.circuits.CircuitTask` per layer).
5. **Renders**: :class:`~filterscope.atlas.tasks.RenderTask` tasks of one batch each, run by the executor
   with :func:`~filterscope.atlas.tasks.render_task`; each outcome's files are written atomically, then its
   records committed.
6. **Activation atlas** (``maps``, with a dataset): each layer's samples (collected by the exemplar pass),
   laid out, binned and rendered as icons (:mod:`.maps`, :mod:`filterscope.maps`).
7. **Trust** (``trust=True``, with a dataset): each unit's faithfulness scores and description, from its
   renders, the pass's maxima and the dataset (:mod:`.trust`: a :class:`~filterscope.atlas.trust.TrustTask` per
   layer), judged by an independent network (EfficientNet-Lite2).

The executor (:mod:`.executors`) only decides where the task functions run: this process
(:class:`~filterscope.atlas.executors.LocalExecutor`, the default) or a Dask cluster
(:class:`~filterscope.atlas.distributed.DaskExecutor`); planning and recording are the same code either way.
One build writes an atlas at a time: it holds ``.build.lock`` in the folder, and a second build waits
for it (then finds the first one's work done).
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..analysis.activations import layer_means
from ..analysis.inputs import decode_image, decoded
from ..analysis.receptive_field import ReceptiveField, receptive_field
from ..arguments import checked
from ..errors import AtlasError, ChannelError, FilterscopeError
from ..files import OutputLock, atomic_write, open_matrix, remove_stale_parts, write_bytes
from ..identity import RenderIdentity, RenderSettings
from ..layers import LayerRef, layer_info, layer_slug, resolve_layer, slug
from ..maps.samples import SampleSpec
from ..maps.settings import MapSettings
from ..metrics import reference_crops
from ..objectives import Channel
from ..recipes import Recipe, get_recipe
from ..render import plan_batches
from ..results import StepInfo
from ..runtime import Runtime, prefetch
from ..tensors import to_pil
from ..zoo.model import LoadedModel, coerce_model
from ..zoo.weights import weights_fingerprint
from .circuits import circuit_task, circuit_tasks, record_circuits
from .dataset import Dataset, list_dataset
from .executors import Executor, LocalExecutor
from .exemplars import UnitTracker, cofiring, histograms
from .maps import MapLayer, SampleWriter, attributed_classes, collect_samples, lay_out_map, run_icons, sample_stem
from .records import Crop, CropJob, FinishedRender, NewExemplar, PlannedRender, RenderJob, UnitPassStats, UnitStats
from .store import AtlasStore
from .tasks import PassShard, RenderTask, RenderTaskOutcome, ShardOutcome, TaskFailure, render_task, scan_shard
from .trust import record_trust, trust_task, trust_tasks

__all__ = ["BuildProgress", "BuildSummary", "build_atlas", "LayerPlan", "RenderGroup", "PassState", "record_renders",
           "LOCK_NAME", "CROP_SIDE", "EXEMPLAR_THUMBNAIL_SIDE"]

LOCK_NAME = ".build.lock"
EXEMPLAR_THUMBNAIL_SIDE = 96
"""Exemplar thumbnails (stored in the atlas) fit in this many pixels (a web page's grid)."""
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

    def circuits_progress(self, done: int, total: int) -> None:
        """Units whose circuit is done so far."""

    def trust_progress(self, done: int, total: int) -> None:
        """Units whose trust record is done so far."""

    def map_progress(self, what: str, done: int, total: int) -> None:
        """The activation atlas's stage ``what`` (``samples``, ``icons``): done so far of ``total``."""

    def render_started(self, label: str, units: int) -> None:
        """Rendering ``units`` units of one layer, recipe and seed starts."""

    def render_step(self, info: StepInfo) -> None:
        """One Adam step (see :func:`~filterscope.render.iter_render`)."""

    def unit_finished(self, layer: str, unit: int, row: FinishedRender) -> None:
        """A render was recorded (``row``: status, activations, scores, file)."""

    def workers(self, units_per_minute: dict[str, float]) -> None:
        """On a cluster: units recorded per minute, by worker."""


@dataclass
class BuildSummary:
    """What a build did.

    Attributes:
        rendered: Renders recorded by this build (ok, inactive, not-improved or failed).
        failed: Those of them that failed (non-finite values), with their messages.
        not_improved: Those whose objective did not rise (recorded, shown marked: failed visualizations).
        already: Renders wanted that the atlas already held (not redone).
        passes: Exemplar passes run (one per layer that needed one).
        pass_images_per_second: Images per second of the exemplar pass (0 when none ran).
        crops: Exemplar crops cut.
        seconds: Wall time of the whole build.
        first_render_seconds: From the start of the build to the first render recorded (``None`` when none).
        circuits: Units whose circuit this build recorded.
        circuit_seconds: Wall time of the circuits stage.
        trust: Units whose trust record (scores and description) this build recorded.
        trust_seconds: Wall time of the trust stage.
        maps: Activation atlases this build laid out; ``icons`` the icons it rendered, ``icon_failures`` each
            icon task that failed (``"LABEL: MESSAGE"``; its cells keep no icon and the next build renders them),
            ``map_seconds`` the stage's wall time.
        render_start_seconds: From the start of the build to the start of the first render (planning,
            model fingerprint, receptive fields, skipping what is done; ``None`` when nothing was rendered).
    """

    rendered: int = 0
    failed: list[str] = field(default_factory=list)
    not_improved: list[str] = field(default_factory=list)
    already: int = 0
    passes: int = 0
    pass_images_per_second: float = 0.0
    crops: int = 0
    seconds: float = 0.0
    first_render_seconds: float | None = None
    render_start_seconds: float | None = None
    circuits: int = 0
    circuit_seconds: float = 0.0
    trust: int = 0
    trust_seconds: float = 0.0
    maps: int = 0
    icons: int = 0
    icon_failures: list[str] = field(default_factory=list)
    map_seconds: float = 0.0


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
    record = store.layer_by_id(layer.id)
    if record.receptive_field is not None:
        return record.receptive_field
    found = receptive_field(loaded, layer.ref)
    store.set_receptive_field(layer.id, found)
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


def _remove_stale_parts_under(folder: Path) -> None:
    """The files a killed build was writing (atomic writes: never under their final name), in every folder."""
    for part_folder in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        remove_stale_parts(part_folder)


@checked
def build_atlas(atlas: AtlasStore | str | os.PathLike[str], model: LoadedModel | torch.nn.Module,
                layers: str | Sequence[str], *, units: Sequence[int] | dict[str, Sequence[int]] | None = None,
                recipes: Sequence[str | Recipe] = ("paper",), seeds: Sequence[int] = (0,),
                dataset: str | os.PathLike[str] | Dataset | None = None, exemplars: int = 9, scores: bool = True,
                fit: str = "crop", runtime: Runtime | None = None, batch_size: int | None = None,
                retry_failed: bool = False, progress: BuildProgress | None = None,
                checkpoint_seconds: float = 30.0, executor: Executor | None = None,
                circuits: bool = True, trust: bool = True, maps: MapSettings | bool = False) -> BuildSummary:
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
        checkpoint_seconds: How often the exemplar pass saves its state (between shards).
        executor: Where the tasks run: this process (default, :class:`~.executors.LocalExecutor`) or a
            Dask cluster (:class:`~filterscope.atlas.distributed.DaskExecutor`); the atlas is written here.
        circuits: Record each unit's circuit (inputs from the previous built layer, outputs, classes).
        trust: Record each unit's trust scores and description (:mod:`filterscope.trust`), for layers with a
            dataset of 20 images or more, after the renders.
        maps: An activation atlas of each layer (``True``: the default :class:`~filterscope.maps.MapSettings`),
            from the exemplar pass's samples; needs a dataset.
    """
    started = time.perf_counter()
    loaded = coerce_model(model)
    if exemplars < 1:
        raise AtlasError(f"exemplars must be at least 1 (got {exemplars})")
    if batch_size is not None and batch_size < 1:
        raise AtlasError(f"batch_size must be at least 1 (got {batch_size})")
    layer_names = [layers] if isinstance(layers, str) else list(layers)
    if not layer_names:
        raise AtlasError("No layer given")
    resolved = [(name, resolve_layer(loaded, name)) for name in layer_names]  # every name checked first
    infos = {name: layer_info(loaded, ref) for name, ref in resolved}
    wanted = {name: _units_for(units, name, ref, infos[name].channels, loaded.name) for name, ref in resolved}
    recipe_list = [(r, get_recipe(r)) if isinstance(r, str) else (r.name or "custom", r) for r in recipes]
    data = dataset if isinstance(dataset, Dataset) or dataset is None else list_dataset(dataset)
    map_settings = MapSettings() if maps is True else maps or None
    store = atlas if isinstance(atlas, AtlasStore) else None
    folder = store.path if store is not None else Path(atlas)  # type: ignore[arg-type]
    progress = progress or BuildProgress()

    def waiting(holder: str) -> None:
        progress.message(f"another atlas build ({holder}) is writing {folder}; waiting for it to finish")

    with OutputLock(folder, name=LOCK_NAME, on_wait=waiting), \
            (contextlib.nullcontext(store) if store is not None else AtlasStore(folder)) as store:  # closed on failure
        _remove_stale_parts_under(folder)
        build = _Build(store, loaded, runtime or Runtime(), progress, executor or LocalExecutor(), started,
                       map_settings)
        plan = build.record_layers([(ref, infos[name].channels, wanted[name], tuple(infos[name].shape))
                                    for name, ref in resolved])
        if data is not None:
            build.exemplar_stage(plan, data, exemplars, fit, checkpoint_seconds)
        if circuits:
            build.timed("circuit_seconds", build.circuit_stage, plan, fit)
        groups = build.plan_renders(plan, recipe_list, list(seeds), scores, retry_failed)
        if groups:
            build.summary.render_start_seconds = time.perf_counter() - started
            build.run_renders(groups, batch_size)
        if map_settings is not None:
            build.timed("map_seconds", build.map_stage, plan, map_settings, fit, checkpoint_seconds)
        if trust and data is not None:
            build.timed("trust_seconds", build.trust_stage, plan, fit)
    build.summary.seconds = time.perf_counter() - started
    return build.summary


def _counter(total: int, tell: Callable[[int, int], None]) -> Callable[[object], None]:
    """A task's per-unit report: counts the units done, and tells ``tell(done, total)``."""
    done = 0

    def report(_unit: object) -> None:
        nonlocal done
        done += 1
        tell(done, total)

    return report


@dataclass
class RenderGroup:
    """Planned renders of one layer with one recipe and seed (``jobs``: the atlas's pending rows);
    ``maxima``: the layer's reference maxima for the quality scores (or ``None``)."""

    layer: LayerPlan
    recipe_name: str
    recipe: Recipe
    seed: int
    jobs: list[RenderJob]
    maxima: torch.Tensor | None


@dataclass
class _Build:
    """One build's state: the atlas, the model, how it runs, where progress goes, what it did so far."""

    store: AtlasStore
    loaded: LoadedModel
    runtime: Runtime
    progress: BuildProgress
    executor: Executor
    started: float
    map_settings: MapSettings | None = None
    summary: BuildSummary = field(default_factory=lambda: BuildSummary())
    references: torch.Tensor | None = None  # the reference photos of the quality scores, loaded once
    weights_hash: str = ""  # the model's weights fingerprint, set by record_layers
    pass_ids: dict[int, int] = field(default_factory=dict)  # layer id -> this build's exemplar pass

    def timed(self, name: str, stage: Callable[..., None], *args: object) -> None:
        """Run a stage, recording its wall time as the summary's ``name``."""
        begun = time.perf_counter()
        stage(*args)
        setattr(self.summary, name, time.perf_counter() - begun)

    # ------------------------------------------------------------------------------------------ plan
    def record_layers(self, layers: list[tuple[LayerRef, int, list[int], tuple[int, ...]]]) -> list[LayerPlan]:
        """Record the model (with its weights' fingerprint) and each ``(ref, channels, units, shape)`` layer."""
        loaded = self.loaded
        self.weights_hash = weights_fingerprint(loaded.module)
        model_id = self.store.add_model(loaded.name, loaded.weights, self.weights_hash, loaded.info.get("source"),
                                        loaded.preprocessing)
        return [LayerPlan(ref, self.store.add_layer(model_id, str(ref), channels, list(shape)), channels, units,
                          shape[1:]) for ref, channels, units, shape in layers]

    def plan_renders(self, plan: list[LayerPlan], recipes: list[tuple[str, Recipe]], seeds: list[int], scores: bool,
                     retry_failed: bool) -> list[RenderGroup]:
        """Record every wanted render (pending unless the atlas has it) and return what is left to do."""
        settings = RenderSettings.of(self.loaded, self.runtime)
        groups = []
        for layer in plan:
            maxima = None
            for (recipe_name, recipe), seed in ((r, s) for r in recipes for s in seeds):
                planned = [self.planned(layer, unit, recipe_name, recipe, seed, settings) for unit in layer.units]
                self.store.add_renders(planned)
                pending = self.store.pending_renders([p.key for p in planned], retry_failed)
                self.summary.already += len(planned) - len(pending)
                if not pending:
                    continue
                if scores and maxima is None:
                    maxima = self.reference_maxima(layer)
                groups.append(RenderGroup(layer, recipe_name, recipe, seed, pending, maxima))
        return groups

    def planned(self, layer: LayerPlan, unit: int, recipe_name: str, recipe: Recipe, seed: int,
                settings: RenderSettings) -> PlannedRender:
        objective = Channel(layer.ref, unit)
        identity = RenderIdentity.of(self.weights_hash, objective, recipe, seed, settings)
        return PlannedRender(layer.id, unit, objective.description, recipe_name, identity.recipe, seed, settings,
                             identity.key)

    def reference_maxima(self, layer: LayerPlan) -> torch.Tensor | None:
        """The layer's per-unit maxima over the reference photos (the quality scores' scale), or ``None``."""
        if self.references is None:
            self.references = _references(self.loaded, self.progress)
        if not self.references.numel():
            return None
        means = layer_means(self.loaded, layer.ref, self.references, runtime=self.runtime)
        return means.amax(dim=0).clamp(min=1e-6)

    # --------------------------------------------------------------------------------- exemplar pass
    def exemplar_stage(self, plan: list[LayerPlan], data: Dataset, n: int, fit: str,
                       checkpoint_seconds: float) -> None:
        store = self.store
        dataset_id = store.add_dataset(data.source, data.fingerprint, [str(p) for p in data.paths], list(data.hashes))
        settings = {"fit": fit, "precision": self.runtime.precision,
                    "input": list(self.loaded.preprocessing.input_shape)}
        text = json.dumps(settings, sort_keys=True)
        passes = {layer.id: store.add_pass(layer.id, dataset_id, text, n) for layer in plan}
        todo = [layer for layer in plan if passes[layer.id][1] != "done"]
        fields = {layer.id: _receptive_field(store, self.loaded, layer) for layer in todo}
        if todo:
            self.progress.message(f"exemplar pass: {len(data)} images, layer(s) {', '.join(str(x.ref) for x in todo)}")
            spec = self.map_settings.samples if self.map_settings is not None else None
            state = PassState(store, todo, {x.id: passes[x.id][0] for x in todo}, len(data), n,
                              {x.id: spec for x in todo} if spec is not None else {},
                              attributed_classes(self.loaded, spec) if spec is not None else 0)
            self.summary.pass_images_per_second = self.run_pass(state, data, fit, checkpoint_seconds, fields)
            self.summary.passes += len(todo)
        for layer in plan:
            self.summary.crops += _cut_crops(store, self.loaded, layer, passes[layer.id][0], fit, self.progress)
        self.pass_ids = {layer.id: passes[layer.id][0] for layer in plan}

    # ------------------------------------------------------------------------------ activation atlas
    def map_stage(self, plan: list[LayerPlan], settings: MapSettings, fit: str, checkpoint_seconds: float) -> None:
        """Each layer's activation atlas (:mod:`.maps`): samples (when the pass has none), layout, icons."""
        spec = settings.samples
        for x in plan:
            latest = self.store.latest_pass(x.id)
            pass_id = self.pass_ids.get(x.id) or (latest.id if latest is not None else None)
            if pass_id is None:
                raise AtlasError(f"The map of {x.ref} needs an exemplar pass over a dataset: build it with --images "
                                 "DIR (the samples come from the pass)")
            layer = MapLayer(str(x.ref), x.id, x.channels, x.grid, pass_id)
            samples = self.store.map_samples(pass_id, spec.positions, spec.seed)
            if samples is None:
                self.progress.message(f"map of {x.ref}: the exemplar pass has no samples ({settings.positions} "
                                      "positions); collecting them in a pass of their own")
                collect_samples(self.store, self.loaded, self.executor, self.runtime, layer, spec=spec, fit=fit,
                                report=lambda d, t: self.progress.map_progress("samples", d, t),
                                checkpoint_seconds=checkpoint_seconds)
                samples = self.store.map_samples(pass_id, spec.positions, spec.seed)
                assert samples is not None
            key = settings.key(samples.id, self.weights_hash)
            record = self.store.map_by_key(key)
            if record is None:
                self.progress.message(f"map of {x.ref}: laying out {samples.count} samples ({settings.describe()})")
                record = lay_out_map(self.store, self.loaded, layer, samples, settings, key)
                self.summary.maps += 1
            icons = run_icons(self.store, self.loaded, self.executor, layer, record, settings, self.runtime,
                              lambda d, t: self.progress.map_progress("icons", d, t))
            self.summary.icons += icons.rendered
            self.summary.icon_failures += icons.failed
            for failure in icons.failed:
                self.progress.message(f"map icons failed (rendered again by the next build): {failure}")

    # --------------------------------------------------------------------------------------- circuits
    def circuit_stage(self, plan: list[LayerPlan], fit: str) -> None:
        """Each layer's circuits (:mod:`.circuits`), in the model's order, what the atlas lacks of them."""
        order = {name: i for i, name in enumerate(name for name, _ in self.loaded.module.named_modules())}
        layers = sorted(plan, key=lambda x: (order.get(x.ref.name, len(order)), x.ref.call))
        tasks = circuit_tasks(self.store, self.loaded, [(str(x.ref), x.id, x.units, self.pass_ids.get(x.id))
                                                        for x in layers], fit)
        if not tasks:
            return
        ids = {str(x.ref): x.id for x in plan}
        report = _counter(sum(len(t.units) for t in tasks), self.progress.circuits_progress)
        for task, outcome in self.executor.map(circuit_task, self.loaded, tasks, ordered=False, report=report):
            why = record_circuits(self.store, self.loaded.name, ids, task, outcome)
            if why is not None:
                self.progress.message(f"no circuits for {task.label}: {why}")
            else:
                self.summary.circuits += len(task.units)
                self.progress.message(f"circuits: {task.label}, {len(task.units)} unit(s)")

    # ------------------------------------------------------------------------------------------ trust
    def trust_stage(self, plan: list[LayerPlan], fit: str) -> None:
        """Each layer's trust records (:mod:`.trust`), what the atlas lacks of them."""
        tasks = trust_tasks(self.store, self.loaded, [(str(x.ref), x.id, x.units, self.pass_ids.get(x.id))
                                                      for x in plan], fit)
        if not tasks:
            return
        report = _counter(sum(len(t.units) for t in tasks), self.progress.trust_progress)
        for task, outcome in self.executor.map(trust_task, self.loaded, tasks, ordered=False, report=report):
            why = record_trust(self.store, task, outcome)
            if why is not None:
                self.progress.message(f"no trust scores for {task.layer}: {why}")
            else:
                self.summary.trust += len(task.units)
                self.progress.message(f"trust: {task.layer}, {len(task.units)} unit(s)")

    def run_pass(self, state: PassState, data: Dataset, fit: str, checkpoint_seconds: float,
                 fields: dict[int, ReceptiveField]) -> float:
        """Run the pass's shards on the executor, merge them in order, checkpoint; images per second."""
        if state.start:
            self.progress.message(f"exemplar pass: resuming after image {state.start} of {len(data)} (checkpoint)")
        size = self.executor.shard_images
        shards = [PassShard(tuple(str(x.ref) for x in state.layers), tuple(x.channels for x in state.layers),
                            tuple((i, str(data.paths[i])) for i in range(start, min(start + size, len(data)))),
                            state.n, fit, self.runtime, state.specs) for start in range(state.start, len(data), size)]

        def skipped(index: int, error: str) -> None:
            self.progress.message(f"skipped {data.paths[index]}: {error}")

        def report(done: int) -> None:
            self.progress.pass_progress(done, len(data))

        begun = last_save = time.perf_counter()
        for shard, outcome in self.executor.map(scan_shard, self.loaded, shards, ordered=True, report=report):
            if isinstance(outcome, TaskFailure):  # the pass cannot go on without a shard
                raise AtlasError(f"exemplar pass: the shard of images {shard.items[0][0]}-{shard.end - 1} failed: "
                                 f"{outcome.message}")
            state.merge(outcome, skipped)
            report(shard.end)
            if time.perf_counter() - last_save > checkpoint_seconds and shard.end < len(data):
                state.save(shard.end)
                last_save = time.perf_counter()
        seconds = time.perf_counter() - begun
        state.finish(self.loaded, fields, seconds)
        processed = sum(len(shard.items) for shard in shards)
        return processed / seconds if seconds > 0 else 0.0

    # ---------------------------------------------------------------------------------------- renders
    def render_tasks(self, groups: list[RenderGroup], batch_size: int | None) -> list[RenderTask]:
        """Each group's jobs in tasks of one batch (the render loop's own batches: the same images)."""
        tasks: list[RenderTask] = []
        for group in groups:
            size = self.executor.units_per_task or batch_size or plan_batches(
                self.loaded, [Channel(group.layer.ref, job.unit).resolve(self.loaded) for job in group.jobs],
                group.recipe, self.runtime)
            maxima = tuple(group.maxima.tolist()) if group.maxima is not None else None
            # each task is one batch of `size` (or fewer) units: the render loop need not plan it again
            tasks.extend(RenderTask(str(group.layer.ref), tuple(group.jobs[start:start + size]), group.recipe,
                                    group.recipe_name, group.seed, self.runtime, size, maxima)
                         for start in range(0, len(group.jobs), size))
        return tasks

    def run_renders(self, groups: list[RenderGroup], batch_size: int | None) -> None:
        tasks = self.render_tasks(groups, batch_size)
        label = tasks[0].label if len(groups) == 1 else f"{len(groups)} layer/recipe/seed groups"
        self.progress.render_started(f"{label}, {len(tasks)} task(s) on {self.executor.describe()}",
                                     sum(len(t.jobs) for t in tasks))
        per_worker: collections.Counter[str] = collections.Counter()
        begun = time.perf_counter()
        for task, outcome in self.executor.map(render_task, self.loaded, tasks, ordered=False,
                                               report=self.progress.render_step):
            worker = record_renders(self.store, self.loaded.name, task, outcome, self.progress, self.summary,
                                    self.started)
            per_worker[worker] += len(task.jobs)
            minutes = max(time.perf_counter() - begun, 1e-9) / 60
            self.progress.workers({name: count / minutes for name, count in per_worker.items()})


def record_renders(store: AtlasStore, model_name: str, task: RenderTask, outcome: RenderTaskOutcome | TaskFailure,
                   progress: BuildProgress, summary: BuildSummary, started: float) -> str:
    """Write each rendered unit's files atomically, then commit their records in one transaction (a failed
    task: its units recorded as failed, with the message); returns the worker that ran it."""
    if isinstance(outcome, TaskFailure):
        finished = [FinishedRender(job.id, job.unit, "failed", message=outcome.message) for job in task.jobs]
        worker = "failed"
    else:
        folder = store.path / "renders" / slug(model_name) / layer_slug(task.layer)
        finished = []
        for o in outcome.outcomes:
            array = write_bytes(folder / f"{o.name}.npy", o.npy).relative_to(store.path) if o.npy is not None else None
            png = write_bytes(folder / f"{o.name}.png", o.png).relative_to(store.path) if o.png is not None else None
            finished.append(replace(o.values, file=str(png) if png else None, array_file=str(array) if array else None))
        worker = outcome.worker
    store.finish_renders(finished)
    if summary.first_render_seconds is None:
        summary.first_render_seconds = time.perf_counter() - started
    for row in finished:
        summary.rendered += 1
        if row.status == "failed":
            summary.failed.append(f"{task.layer} unit {row.unit}: {row.message}")
        elif row.status == "not-improved":
            summary.not_improved.append(f"{task.layer} unit {row.unit}")
        progress.unit_finished(task.layer, row.unit, row)
    return worker


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


# ------------------------------------------------------------------------------------------- crops
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
    jobs = store.exemplars_without_crops(pass_id, layer.units)
    if not jobs:
        return 0
    by_image: dict[str, list[CropJob]] = {}
    for job in jobs:
        by_image.setdefault(job.path, []).append(job)
    paths = list(by_image)
    done, batch = 0, []

    def load(path: str) -> Image.Image | None:
        try:
            return to_pil(decoded(*decode_image(loaded, path, fit, None)).pixels)
        except (FilterscopeError, OSError):
            return None

    for number, (path, view) in enumerate(zip(paths, prefetch(paths, load)), start=1):
        for job in by_image[path]:
            if view is None:
                continue
            box = job.box
            crop = view.crop((box[0], box[1], box[2], box[3])) if box[2] > box[0] and box[3] > box[1] else view
            side = CROP_SIDE if max(crop.size) > CROP_SIDE else max(crop.size)
            batch.append(Crop(job.id, _jpeg(crop, side), _jpeg(crop, EXEMPLAR_THUMBNAIL_SIDE)))
        if len(batch) >= 256 or number == len(paths):
            store.set_crops(batch)
            done += len(batch)
            batch = []
        progress.crops_progress(number, len(paths))
    return done


def _references(loaded: LoadedModel, progress: BuildProgress) -> torch.Tensor:
    try:
        return reference_crops(loaded)
    except FilterscopeError as exc:
        progress.message(f"no quality scores: {exc}")
        return torch.zeros(0)
