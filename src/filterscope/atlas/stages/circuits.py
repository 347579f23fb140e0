"""The circuits of an atlas build: a task per built layer, its function, and the record step.

Layers are taken in the model's order (``named_modules``). For each built layer B after the first, with A the
built layer before it, a :class:`CircuitTask` computes the expanded weights of the whole pair once
(:func:`~filterscope.circuits.expanded_weights`), then for each wanted unit of B its circuit
(:func:`~filterscope.circuits.circuit`: top inputs by weight and by attribution on its top dataset exemplars,
the causal check), the outputs of A's wanted units into B, and the classes B's units promote and suppress
(:func:`~filterscope.circuits.class_effects`, when the model's output is a vector of classes); the first
layer gets its classes only. Without a dataset the exemplars are the reference photos' (as ``filterscope
circuit`` without ``--atlas``).

:func:`record_circuits` writes the pair's ``(C_B, C_A, kh, kw)`` array as ``circuits/<model>/<A>--<B>.npy``
(atomically, its SHA-256 recorded) and each unit's sections (:class:`~.records.CircuitSection`) in one
transaction. A task that cannot be done for this pair (B does not depend on A) comes back with its message;
the build goes on without that layer's circuits.
"""

from __future__ import annotations

import io
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ...analysis.inputs import decode_image, decoded
from ...circuits import class_effects, expanded_weights
from ...circuits.circuit import circuit, has_vector_output, top_exemplars
from ...errors import FilterscopeError
from ...files import file_sha256, write_bytes
from ...layers import LayerRef, layer_slug, resolve_layer, slug
from ...metrics import reference_crops
from ...zoo.model import LoadedModel
from ..records import CircuitPair, CircuitSection, LayerRecord
from ..sections import ClassesSection, InputsSection, OutputsSection
from ..store import AtlasStore
from ..tasks import Report, TaskFailure, worker_name
from .base import BuildContext, BuildRequest, NamedFile, Recorded, Stage, register_stage

__all__ = ["CircuitTask", "CircuitOutcome", "circuit_task", "record_circuits", "ExemplarItem", "CIRCUIT_EXEMPLARS",
           "CIRCUIT_DRAWS", "circuit_tasks", "CircuitStage"]

ExemplarItem = tuple[int, str, int, int]
"""An exemplar of a unit of B: ``(unit, image path, y, x)``, the position of its maximum in B's grid."""
CIRCUIT_EXEMPLARS = 8
"""Exemplars per unit for the attribution and the causal check."""
CIRCUIT_DRAWS = 3
"""Random input sets of the causal check in a build (``filterscope circuit`` draws 5)."""


@dataclass(frozen=True)
class CircuitTask:
    """The circuits of ``units`` of ``layer`` (B): inputs from ``source`` (A, ``None`` for the first built layer),
    the outputs of ``source_units`` into B, and (``classes``) the classes; ``exemplars`` of B's units from the
    exemplar pass (empty: the reference photos), images fitted by ``fit``."""

    layer: str
    units: tuple[int, ...]
    source: str | None
    source_units: tuple[int, ...]
    exemplars: tuple[ExemplarItem, ...]
    classes: bool
    fit: str = "crop"
    k: int = 8
    ablate: int = 5
    draws: int = CIRCUIT_DRAWS
    seed: int = 0

    @property
    def label(self) -> str:
        return f"{self.source} -> {self.layer}" if self.source else f"{self.layer} (classes)"


@dataclass(frozen=True)
class CircuitOutcome:
    """Per unit of B: its ``inputs`` and ``classes`` sections; per unit of A: its ``outputs`` section; the pair's
    expanded weights as ``.npy`` bytes and their kernel size; ``message`` when the task could not be done."""

    inputs: dict[int, InputsSection] = field(default_factory=dict)
    outputs: dict[int, OutputsSection] = field(default_factory=dict)
    classes: dict[int, ClassesSection] = field(default_factory=dict)
    weights: bytes | None = None
    kernel: tuple[int, int] = (0, 0)
    seconds: float = 0.0
    worker: str = "local"
    message: str | None = None


def _exemplars(model: LoadedModel, target: LayerRef, task: CircuitTask
               ) -> dict[int, tuple[torch.Tensor, list[tuple[int, int]]]]:
    """Each unit's exemplar pixels and positions: the pass's (each image decoded once), or the reference
    photos' best."""
    if not task.exemplars:
        pixels = reference_crops(model)
        found = top_exemplars(model, target, pixels, task.units, CIRCUIT_EXEMPLARS)
        return {u: (pixels[order], positions) for u, (order, positions) in found.items()}
    views: dict[str, torch.Tensor | None] = {}
    out: dict[int, tuple[list[torch.Tensor], list[tuple[int, int]]]] = {}
    for unit, path, y, x in task.exemplars:
        if path not in views:
            try:
                views[path] = decoded(*decode_image(model, path, task.fit, None)).pixels
            except (FilterscopeError, OSError):
                views[path] = None
        view = views[path]
        if view is not None:
            views_of, positions_of = out.setdefault(unit, ([], []))
            views_of.append(view)
            positions_of.append((y, x))
    return {u: (torch.stack(p), pos) for u, (p, pos) in out.items()}


def circuit_task(model: LoadedModel, task: CircuitTask, report: Report | None = None) -> CircuitOutcome:
    """Do a :class:`CircuitTask` (nothing is written); ``report`` receives each unit of B when it is done."""
    started = time.perf_counter()
    target = resolve_layer(model, task.layer)
    inputs: dict[int, InputsSection] = {}
    outputs: dict[int, OutputsSection] = {}
    weights, kernel = None, (0, 0)
    try:
        if task.source is not None:
            found = expanded_weights(model, task.source, target)
            kernel = found.kernel_size
            buffer = io.BytesIO()
            np.save(buffer, found.weights.numpy().astype(np.float32))
            weights = buffer.getvalue()
            exemplars = _exemplars(model, target, task)
            for unit in task.units:
                pixels, positions = exemplars.get(unit, (torch.zeros(0), []))
                data = circuit(model, target, unit, found.source, k=task.k, images=pixels, positions=positions,
                               exemplars=len(positions), classes=False, ablate=task.ablate, draws=task.draws,
                               seed=task.seed, weights=found).to_dict()
                inputs[unit] = InputsSection.from_dict(data)
                if report is not None:
                    report(unit)
            for unit in task.source_units:
                excite, inhibit = found.outputs(unit, task.k)
                outputs[unit] = OutputsSection.from_dict({"layer": str(target), "excite": [c.to_dict() for c in excite],
                                                          "inhibit": [c.to_dict() for c in inhibit]})
        classes = _classes(model, target, task) if task.classes else {}
    except FilterscopeError as exc:
        return CircuitOutcome(seconds=time.perf_counter() - started, worker=worker_name(),
                              message=str(exc).splitlines()[0])
    return CircuitOutcome(inputs, outputs, classes, weights, kernel, time.perf_counter() - started, worker_name())


def _classes(model: LoadedModel, target: LayerRef, task: CircuitTask) -> dict[int, ClassesSection]:
    if not has_vector_output(model):
        return {}
    effects = class_effects(model, target, task.units)
    out = {}
    for unit in task.units:
        promoted, suppressed = effects.top(unit, task.k)
        out[unit] = ClassesSection.from_dict({"promoted": [c.to_dict() for c in promoted],
                                              "suppressed": [c.to_dict() for c in suppressed]})
    return out


def record_circuits(store: AtlasStore, model_name: str, layer_ids: dict[str, int], task: CircuitTask,
                    outcome: CircuitOutcome | TaskFailure) -> str | None:
    """Write the pair's weights file, then record it and every unit's sections; returns why nothing was
    recorded (``None`` when it was)."""
    if isinstance(outcome, TaskFailure):
        return outcome.message
    if outcome.message is not None:
        return outcome.message
    b_id = layer_ids[task.layer]
    if task.source is not None and outcome.weights is not None:
        a_id = layer_ids[task.source]
        name = f"{layer_slug(task.source)}--{layer_slug(task.layer)}.npy"
        path = write_bytes(store.path / "circuits" / slug(model_name) / name, outcome.weights)
        store.add_circuit_pair(CircuitPair(a_id, b_id, outcome.kernel, str(path.relative_to(store.path)),
                                           file_sha256(path), outcome.seconds))
    sections = [CircuitSection(b_id, u, data) for u, data in outcome.inputs.items()]
    sections += [CircuitSection(b_id, u, data) for u, data in outcome.classes.items()]
    if task.source is not None:
        sections += [CircuitSection(layer_ids[task.source], u, data) for u, data in outcome.outputs.items()]
    store.set_circuit_sections(sections)
    return None


def circuit_tasks(store: AtlasStore, model: LoadedModel, layers: Sequence[tuple[str, int, list[int], int | None]],
                  fit: str) -> list[CircuitTask]:
    """Plan: ``layers`` as ``(name, layer id, wanted units, this build's finished pass or None)`` in the model's
    order; a task for each layer whose wanted units (or its predecessor's, for their outputs) lack a section."""
    tasks = []
    vector = has_vector_output(model)
    for i, (name, layer_id, units, pass_id) in enumerate(layers):
        source = layers[i - 1] if i > 0 else None
        have_inputs = store.units_with_section(layer_id, "inputs")
        have_classes = store.units_with_section(layer_id, "classes")
        missing = [u for u in units if (source is not None and u not in have_inputs)
                   or (vector and u not in have_classes)]
        source_units: list[int] = []
        if source is not None:
            have_outputs = store.units_with_section(source[1], "outputs")
            source_units = [u for u in source[2] if u not in have_outputs]
        if not missing and not source_units:
            continue
        exemplars = tuple(store.top_exemplars(pass_id, missing, CIRCUIT_EXEMPLARS)) if pass_id is not None else ()
        tasks.append(CircuitTask(name, tuple(missing), source[0] if source else None, tuple(source_units), exemplars,
                                 vector, fit))
    return tasks


@register_stage
class CircuitStage(Stage[CircuitTask, CircuitOutcome]):
    """Circuits (see the module docstring): each built layer from the one before it, in the model's order."""

    name = "circuits"
    redone = "circuit pair(s) to compute again"
    after = ("crops",)
    run = staticmethod(circuit_task)

    def wanted(self, request: BuildRequest) -> bool:
        return request.circuits

    def plan(self, context: BuildContext) -> Sequence[CircuitTask]:
        modules = {name: i for i, name in enumerate(name for name, _ in context.loaded.module.named_modules())}
        layers = sorted(context.plan, key=lambda x: (modules.get(x.ref.name, len(modules)), x.ref.call))
        return circuit_tasks(context.store, context.loaded,
                             [(str(x.ref), x.id, x.units, context.pass_ids.get(x.id)) for x in layers],
                             context.request.fit)

    def size(self, task: CircuitTask) -> int:
        return len(task.units)

    def record(self, context: BuildContext, task: CircuitTask, outcome: CircuitOutcome | TaskFailure) -> Recorded:
        ids = {str(x.ref): x.id for x in context.plan}
        why = record_circuits(context.store, context.loaded.name, ids, task, outcome)
        if why is not None:
            return Recorded(failed=(f"{task.label}: {why}",))
        return Recorded(len(task.units), message=f"circuits: {task.label}, {len(task.units)} unit(s)")

    def recorded(self, store: AtlasStore, layer: LayerRecord) -> str | None:
        units = set().union(*(store.units_with_section(layer.id, section) for section in ("inputs", "outputs",
                                                                                           "classes")))
        return f"{len(units)} of {layer.channels} units have a circuit" if units else None

    def files(self, conn: sqlite3.Connection) -> Iterator[NamedFile]:
        for c in conn.execute("SELECT c.id, c.file, a.name AS a, b.name AS b FROM circuit_pairs c JOIN layers a "
                              "ON a.id = c.source_layer_id JOIN layers b ON b.id = c.target_layer_id ORDER BY c.id"):
            yield NamedFile(f"circuit {c['a']} → {c['b']}", c["file"], self.name, (c["id"],))

    def invalidate(self, conn: sqlite3.Connection, keys: set[tuple[int, ...]]) -> None:
        conn.executemany("DELETE FROM circuit_pairs WHERE id = ?", sorted(keys))
