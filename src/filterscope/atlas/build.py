"""Building an atlas: record the model and its layers, then run each wanted stage, in dependency order.

:func:`build_atlas` does only what the atlas does not hold yet, in an order that gives results early. The model
is recorded with a fingerprint of its weights and each layer with its shape; then each registered
:class:`~.stages.Stage` the request wants (:meth:`~.stages.Stage.wanted`) runs: plan what the atlas lacks as
frozen tasks, let the executor run the stage's task function over them, record each outcome. In order
(:mod:`.stages`): the exemplar pass (with a dataset), crops, circuits, renders, the activation atlas's samples,
layout and icons (with ``maps``), trust.

The executor (:mod:`.executors`) only decides where the task functions run: this process
(:class:`~filterscope.atlas.executors.LocalExecutor`, the default) or a Dask cluster
(:class:`~filterscope.atlas.distributed.DaskExecutor`); planning and recording are the same code either way.
One build writes an atlas at a time: it holds ``.build.lock`` in the folder, and a second build waits
for it (then finds the first one's work done).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..arguments import checked
from ..engine.recipes import Recipe, get_recipe
from ..errors import AtlasError
from ..files import OutputLock, remove_stale_parts
from ..maps.settings import MapSettings
from ..runtime.core import Runtime
from ..zoo.model import LoadedModel, coerce_model
from .dataset import Dataset, list_dataset
from .executors import Executor, LocalExecutor
from .plan import record_layers, wanted_layers
from .stages import BuildContext, BuildProgress, BuildRequest, BuildSummary, LayerPlan, stage_order
from .stages.renders import RenderGroup, record_renders
from .store import AtlasStore

__all__ = ["BuildProgress", "BuildSummary", "build_atlas", "LayerPlan", "RenderGroup", "record_renders", "LOCK_NAME"]

LOCK_NAME = ".build.lock"


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
                circuits: bool | None = None, trust: bool | None = None,
                maps: MapSettings | bool = False, stages: Sequence[object] = ()) -> BuildSummary:
    """Add to ``atlas`` what it lacks for these layers, units, recipes, seeds and dataset (module docstring); returns
    what each stage did (:class:`~.stages.BuildSummary`).

    Args:
        atlas: An :class:`AtlasStore` or a folder (created when missing or empty).
        model: The model (a ``LoadedModel`` or any module with ImageNet preprocessing).
        layers: One layer or several, in any accepted form.
        units: Units of every layer (default: all), or ``{layer: units}``.
        recipes: Named recipes, recipe files or :class:`Recipe` objects: one image per unit each.
        seeds: Seeds of the starting noise: one image per unit each.
        dataset: A folder of images (recursive) or a text file of image paths (exemplars); ``None``: no pass.
        exemplars: How many exemplars per unit and kind (top by maximum, top by mean, bottom by minimum).
        scores: Compute quality scores (activation ratio, robustness, high-frequency share) of each render.
        fit: How dataset images meet the input: ``crop`` (the model's own preprocessing), ``squash``, ``pad``.
        runtime: Precision, memory format and memory budget.
        batch_size: Images per batch (rendering: from the memory budget; the pass: 4).
        retry_failed: Render again the units whose render failed before.
        progress: Receives progress reports.
        checkpoint_seconds: How often the exemplar pass saves its state (between shards).
        executor: Where the tasks run (:class:`~.executors.LocalExecutor`: here; or a Dask cluster's).
        circuits: Record each unit's circuit (default: when the build renders; :func:`_by_cost`).
        trust: Record each unit's trust scores and description (:mod:`filterscope.trust`; default: as ``circuits``).
        maps: An activation atlas of each layer (``True``: default :class:`~filterscope.maps.MapSettings`).
        stages: The settings of further stages (``ConceptSettings`` of :mod:`.stages.concepts`): each runs.
    """
    started, loaded = time.perf_counter(), coerce_model(model)
    if exemplars < 1 or (batch_size is not None and batch_size < 1):
        raise AtlasError(f"exemplars and batch_size must be at least 1 (got {exemplars} and {batch_size})")
    wanted, progress = wanted_layers(loaded, layers, units), progress or BuildProgress()  # checked before writing
    circuits, trust = _by_cost(circuits, trust, bool(recipes), progress)
    request = BuildRequest(
        tuple((r, get_recipe(r)) if isinstance(r, str) else (r.name or "custom", r) for r in recipes),
        tuple(seeds), dataset if isinstance(dataset, Dataset) or dataset is None else list_dataset(dataset),
        exemplars, scores, fit, batch_size, retry_failed, checkpoint_seconds, circuits, trust,
        MapSettings() if maps is True else maps or None, tuple(stages))
    store = atlas if isinstance(atlas, AtlasStore) else None
    folder = atlas.path if isinstance(atlas, AtlasStore) else Path(atlas)

    def waiting(holder: str) -> None:
        progress.message(f"another atlas build ({holder}) is writing {folder}; waiting for it to finish")

    with OutputLock(folder, name=LOCK_NAME, on_wait=waiting), \
            (contextlib.nullcontext(store) if store is not None else AtlasStore(folder)) as store:  # closed on failure
        _remove_stale_parts_under(folder)
        plan, fingerprint = record_layers(store, loaded, wanted)
        context = BuildContext(store, loaded, runtime or Runtime(), executor or LocalExecutor(), progress, request,
                               plan, fingerprint, started)
        _run_stages(context)
    context.summary.seconds = time.perf_counter() - started
    return context.summary


def _by_cost(circuits: bool | None, trust: bool | None, renders: bool,
             progress: BuildProgress) -> tuple[bool, bool]:
    """The circuits and trust stages by default only when the build renders: on an exemplars-only build they would
    cost about a second per unit (more than the pass itself on a large layer) for records nobody asked for."""
    if not renders and (circuits is None or trust is None):
        progress.message("exemplars only: circuits and trust records are not computed (about a second per unit "
                         "each; ask for them with --circuits / --trust)")
    return (renders if circuits is None else circuits), (renders if trust is None else trust)


def _run_stages(context: BuildContext) -> None:
    """Every registered stage the request wants, in dependency order, each timed in its report."""
    for stage in stage_order():
        if stage.wanted(context.request):
            begun = time.perf_counter()
            if stage.tables:  # only a stage with tables of its own opens a write transaction for them
                with context.store.transaction() as conn:
                    stage.migrate(conn)
            stage.execute(context)
            if stage.name in context.summary.stages:
                context.report(stage.name).seconds = time.perf_counter() - begun
