"""The concepts stage of an atlas build: a sparse dictionary of each built layer (:mod:`filterscope.concepts`),
trained on its exemplar pass's images, with each concept's usage and top images.

Asked for with ``build_atlas(..., stages=[ConceptSettings(...)])`` (``atlas build --concepts N``). For each layer
with a finished pass of at least :data:`MIN_IMAGES` images and no dictionary of these settings, a
:class:`ConceptTask` holds the pass's image paths, the fit and the settings; its function, :func:`concept_task`,
decodes the images (at most ``settings.images``, a seeded choice), trains the dictionary with a fifth held out
for its numbers (:func:`~filterscope.concepts.train_dictionary`), then encodes every position of every image once
and keeps each concept's top images (its spatial maximum and where). :meth:`ConceptStage.record` writes the
dictionary's file (atomically, ``concepts/LAYER_ID-KEY.concepts``) and then, in one transaction, its records. A
build killed meanwhile leaves at worst a file without a record: the next build trains again only what has no
record, and never retrains a finished dictionary.

The stage keeps its own tables (created by the build before it runs; an atlas that never ran it has none):
``concept_dictionaries`` (one per layer and settings: settings, quality, file), ``concepts`` (each concept's
usage and the unit it writes to most) and ``concept_exemplars`` (each concept's top images in the pass). Its
reads are :func:`concept_dictionaries` and :func:`concepts_of`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...analysis.inputs import prepare_image
from ...concepts import ConceptDictionary, DictionaryQuality, layer_grids, load_dictionary, train_dictionary
from ...errors import InvalidOptionError
from ...layers import resolve_layer
from ...zoo.model import LoadedModel
from ..records import LayerRecord
from ..schema import now
from ..store import AtlasStore
from ..tasks import Report, TaskFailure, worker_name
from ..writes import record_files
from .base import BuildContext, BuildRequest, NamedFile, Recorded, Stage, has_table, register_stage

__all__ = ["ConceptSettings", "ConceptTask", "ConceptOutcome", "concept_task", "ConceptStage",
           "ConceptDictionaryRecord", "ConceptRecord", "ConceptExemplar", "concept_dictionaries", "concepts_of",
           "MIN_IMAGES"]

MIN_IMAGES = 10
"""A pass with fewer images gets no dictionary (a fifth is held out for its numbers)."""


@dataclass(frozen=True)
class ConceptSettings:
    """A dictionary per built layer: ``atoms`` concepts (default 8 x the layer's channels), ``k`` active per
    vector, the ``kind`` of sparse autoencoder, ``epochs``, random ``views`` of each image (besides it and its
    mirror image); trained on at most ``images`` of the pass's images;
    ``exemplars`` top images kept per concept; ``seed``."""

    atoms: int | None = None
    k: int = 32
    kind: str = "topk"
    epochs: int = 5
    views: int = 4
    images: int = 1000
    exemplars: int = 9
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.atoms is not None and self.atoms < 2) or self.k < 1 or self.images < MIN_IMAGES or self.exemplars < 1:
            raise InvalidOptionError(
                f"concepts: atoms must be at least 2, k and exemplars at least 1 and images at least {MIN_IMAGES} "
                f"(got {self.atoms}, {self.k}, {self.exemplars}, {self.images})")

    @property
    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class ConceptTask:
    """Train the dictionary of ``layer`` on the pass ``pass_id``'s images ``paths`` (with ``fit``)."""

    layer: str
    layer_id: int
    pass_id: int
    paths: tuple[str, ...]
    fit: str
    settings: ConceptSettings


@dataclass(frozen=True)
class ConceptOutcome:
    """The trained dictionary; each concept's top ``(value, image, y, x)`` in the pass (``(K, n, 4)``, images as
    indices of the task's paths); the time and worker."""

    found: ConceptDictionary
    top: torch.Tensor
    seconds: float
    worker: str = "local"


def _chosen(count: int, most: int, seed: int) -> list[int]:
    """The images the dictionary is trained on: all, or a seeded choice of ``most``, in pass order."""
    if count <= most:
        return list(range(count))
    return sorted(torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:most].tolist())


def concept_task(model: LoadedModel, task: ConceptTask, report: Report | None = None) -> ConceptOutcome:
    """Do a :class:`ConceptTask` (nothing is written; see the module docstring)."""
    started, settings = time.perf_counter(), task.settings
    ref = resolve_layer(model, task.layer)
    chosen = _chosen(len(task.paths), settings.images, settings.seed)
    pixels = torch.stack([prepare_image(model, task.paths[i], fit=task.fit).pixels for i in chosen])
    found = train_dictionary(model, ref, pixels, atoms=settings.atoms, k=settings.k, kind=settings.kind,
                             epochs=settings.epochs, views=settings.views, seed=settings.seed)
    if report is not None:
        report(task.layer)
    codes = found.grid_codes(layer_grids(model, ref, pixels))
    n, width = codes.shape[0], codes.shape[-1]
    peak, where = codes.flatten(2).max(dim=2)  # (n, K) each image's maximum and its position
    shown = min(settings.exemplars, n)
    values, images = peak.T.topk(shown, dim=1)  # (K, shown)
    places = where.T.gather(1, images)
    index = torch.tensor(chosen)[images]
    top = torch.stack([values, index.float(), (places // width).float(), (places % width).float()], dim=2)
    return ConceptOutcome(found, top, time.perf_counter() - started, worker_name())


# ------------------------------------------------------------------------------------------- records
TABLES = (
    "CREATE TABLE IF NOT EXISTS concept_dictionaries (id INTEGER PRIMARY KEY, layer_id INTEGER NOT NULL "
    "REFERENCES layers(id), pass_id INTEGER NOT NULL, key TEXT NOT NULL, settings TEXT NOT NULL, quality TEXT NOT "
    "NULL, file TEXT NOT NULL, vectors INTEGER NOT NULL, seconds REAL NOT NULL, finished TEXT NOT NULL, "
    "UNIQUE (layer_id, key))",
    "CREATE TABLE IF NOT EXISTS concepts (dictionary_id INTEGER NOT NULL REFERENCES concept_dictionaries(id) "
    "ON DELETE CASCADE, concept INTEGER NOT NULL, usage REAL NOT NULL, unit INTEGER NOT NULL, weight REAL NOT NULL, "
    "PRIMARY KEY (dictionary_id, concept))",
    "CREATE TABLE IF NOT EXISTS concept_exemplars (dictionary_id INTEGER NOT NULL REFERENCES "
    "concept_dictionaries(id) ON DELETE CASCADE, concept INTEGER NOT NULL, rank INTEGER NOT NULL, image INTEGER NOT "
    "NULL, value REAL NOT NULL, y INTEGER NOT NULL, x INTEGER NOT NULL, PRIMARY KEY (dictionary_id, concept, rank))")


@dataclass(frozen=True)
class ConceptDictionaryRecord:
    """A layer's dictionary in the atlas: its settings, its numbers (the dictionary's, then the channels' and the
    PCA's), its file (relative to the atlas), training vectors and time."""

    id: int
    layer_id: int
    pass_id: int
    settings: ConceptSettings
    quality: tuple[DictionaryQuality, ...]
    file: str
    vectors: int
    seconds: float

    def load(self, atlas: Path) -> ConceptDictionary:
        """The dictionary itself (:meth:`~filterscope.concepts.ConceptDictionary.encode`, ``decode``, ``atoms``)."""
        return load_dictionary(atlas / self.file)


@dataclass(frozen=True)
class ConceptExemplar:
    """One of a concept's top images: its rank, the image's index in the pass, the concept's maximum there and
    where in the layer's grid."""

    rank: int
    image: int
    value: float
    y: int
    x: int


@dataclass(frozen=True)
class ConceptRecord:
    """A concept: the share of held-out positions it fires on, the unit it writes to most (its largest decoder
    weight, signed) and its top images."""

    concept: int
    usage: float
    unit: int
    weight: float
    exemplars: tuple[ConceptExemplar, ...]


def concept_dictionaries(store: AtlasStore, layer_id: int) -> list[ConceptDictionaryRecord]:
    """The layer's dictionaries, newest first (none in an atlas that never ran the stage)."""
    with store.records() as conn:
        if not has_table(conn, "concept_dictionaries"):
            return []
        rows = conn.execute("SELECT * FROM concept_dictionaries WHERE layer_id = ? ORDER BY id DESC",
                            (layer_id,)).fetchall()
    return [ConceptDictionaryRecord(r["id"], r["layer_id"], r["pass_id"], ConceptSettings(**json.loads(r["settings"])),
                                    tuple(DictionaryQuality(**q) for q in json.loads(r["quality"])), r["file"],
                                    r["vectors"], r["seconds"]) for r in rows]


def concepts_of(store: AtlasStore, dictionary_id: int, concept: int | None = None) -> list[ConceptRecord]:
    """The dictionary's concepts (or one), most used first, each with its top images."""
    where, args = ("AND concept = ?", (dictionary_id, concept)) if concept is not None else ("", (dictionary_id,))
    with store.records() as conn:
        if not has_table(conn, "concepts"):
            return []
        rows = conn.execute(f"SELECT * FROM concepts WHERE dictionary_id = ? {where} ORDER BY usage DESC, concept",
                            args).fetchall()
        shown: dict[int, list[ConceptExemplar]] = {}
        for e in conn.execute(f"SELECT * FROM concept_exemplars WHERE dictionary_id = ? {where} "
                              "ORDER BY concept, rank", args):
            shown.setdefault(e["concept"], []).append(
                ConceptExemplar(e["rank"], e["image"], e["value"], e["y"], e["x"]))
    return [ConceptRecord(r["concept"], r["usage"], r["unit"], r["weight"], tuple(shown.get(r["concept"], ())))
            for r in rows]


def _write(conn: sqlite3.Connection, root: Path, task: ConceptTask, outcome: ConceptOutcome, file: str) -> int:
    found = outcome.found
    cursor = conn.execute(
        "INSERT INTO concept_dictionaries (layer_id, pass_id, key, settings, quality, file, vectors, seconds, "
        "finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (task.layer_id, task.pass_id, task.settings.key, json.dumps(asdict(task.settings)),
         json.dumps([q.to_dict() for q in found.quality]), file, found.vectors, found.seconds, now()))
    dictionary_id = int(cursor.lastrowid or 0)
    atoms = found.atoms
    strongest = atoms.abs().argmax(dim=1)
    conn.executemany("INSERT INTO concepts (dictionary_id, concept, usage, unit, weight) VALUES (?, ?, ?, ?, ?)",
                     [(dictionary_id, c, float(found.usage[c]), int(strongest[c]), float(atoms[c, strongest[c]]))
                      for c in range(atoms.shape[0])])
    conn.executemany("INSERT INTO concept_exemplars (dictionary_id, concept, rank, image, value, y, x) VALUES "
                     "(?, ?, ?, ?, ?, ?, ?)",
                     [(dictionary_id, c, rank, int(row[1]), float(row[0]), int(row[2]), int(row[3]))
                      for c in range(outcome.top.shape[0]) for rank, row in enumerate(outcome.top[c].tolist())
                      if row[0] > 0])
    record_files(conn, root, [file])
    return dictionary_id


@register_stage
class ConceptStage(Stage[ConceptTask, ConceptOutcome]):
    """A dictionary of concepts per built layer (see the module docstring), after its exemplar pass."""

    name = "concepts"
    after = ("exemplars", "crops", "renders")  # the renders first: they are what a build shows soonest
    counts = "layer"
    redone = "concept dictionary(ies) to train again"
    tables = TABLES
    run = staticmethod(concept_task)

    def wanted(self, request: BuildRequest) -> bool:
        return request.option(ConceptSettings) is not None and request.dataset is not None

    def plan(self, context: BuildContext) -> Sequence[ConceptTask]:
        settings = context.request.option(ConceptSettings)
        assert settings is not None  # wanted() said so
        return [ConceptTask(str(layer.ref), layer.id, pass_id, tuple(paths), context.request.fit, settings)
                for layer, pass_id, paths in context.passes_without("concept_dictionaries", settings.key, MIN_IMAGES,
                                                                    "concepts", "a dictionary")]

    def record(self, context: BuildContext, task: ConceptTask, outcome: ConceptOutcome | TaskFailure) -> Recorded:
        if isinstance(outcome, TaskFailure):
            return Recorded(failed=(f"{task.layer}: {outcome.message}",))
        file = f"concepts/{task.layer_id}-{hashlib.sha256(task.settings.key.encode()).hexdigest()[:10]}.concepts"
        store = context.store
        (store.path / file).parent.mkdir(parents=True, exist_ok=True)
        outcome.found.save(store.path / file)  # the file first, then the records that name it
        with store.transaction() as conn:
            _write(conn, store.path, task, outcome, file)
        sae = next(q for q in outcome.found.quality if q.name == "SAE")
        return Recorded(1, message=f"concepts: {task.layer}, {outcome.found.settings.atoms} concepts, FVE "
                                   f"{sae.fve:.2f} at L0 {sae.l0:.0f} in {outcome.seconds:.0f} s on {outcome.worker}")

    def recorded(self, store: AtlasStore, layer: LayerRecord) -> str | None:
        found = concept_dictionaries(store, layer.id)
        if not found:
            return None
        sae = next(q for q in found[0].quality if q.name == "SAE")
        return (f"{len(found)} dictionary(ies); the newest: {sae.atoms} concepts, FVE {sae.fve:.2f} at L0 "
                f"{sae.l0:.0f}, {sae.dead:.0%} dead")

    def files(self, conn: sqlite3.Connection) -> Iterator[NamedFile]:
        if not has_table(conn, "concept_dictionaries"):
            return
        for r in conn.execute("SELECT d.id, d.file, l.name FROM concept_dictionaries d JOIN layers l ON "
                              "l.id = d.layer_id ORDER BY d.id"):
            yield NamedFile(f"concept dictionary of {r['name']}", r["file"], self.name, (r["id"],))

    def invalidate(self, conn: sqlite3.Connection, keys: set[tuple[int, ...]]) -> None:
        ids = [(key[0],) for key in keys]
        for table in ("concept_exemplars", "concepts"):
            conn.executemany(f"DELETE FROM {table} WHERE dictionary_id = ?", ids)
        conn.executemany("DELETE FROM concept_dictionaries WHERE id = ?", ids)

