"""The atlas's read side: every query a page, a command or a build asks, each returning typed records
(:mod:`.records`). Reading needs no lock: SQLite's WAL mode lets a reader see the last commit while a build
writes the next one."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..analysis.receptive_field import ReceptiveField
from ..engine.identity import RenderSettings
from ..engine.recipes import Recipe
from ..errors import AtlasError, did_you_mean
from ..trust.unit import UnitTrust
from ..zoo.preprocessing import Preprocessing
from ..zoo.weights import WeightsSource
from .records import (
    FINISHED,
    CircuitPair,
    CropJob,
    ExemplarRecord,
    LayerRecord,
    ModelRecord,
    PassRecord,
    RenderJob,
    RenderRecord,
    StatusRow,
    UnitRecord,
    UnitStats,
    UnitSummary,
)
from .sections import CircuitSections, ClassesSection, InputsSection, OutputsSection, section_from_dict

__all__ = ["AtlasReader"]


# The typed values of a record's JSON columns, parsed once per distinct text: an atlas holds a handful of
# recipes, settings and preprocessings, read again for every unit a page shows (frozen values: safe to share).
@functools.lru_cache(maxsize=256)
def _recipe(text: str) -> Recipe:
    return Recipe.from_dict(json.loads(text))


@functools.lru_cache(maxsize=256)
def _settings(text: str) -> RenderSettings:
    return RenderSettings.from_json(text)


@functools.lru_cache(maxsize=256)
def _preprocessing(text: str) -> Preprocessing:
    return Preprocessing.from_dict(json.loads(text))


@functools.lru_cache(maxsize=256)
def _weights(recorded: str | None, text: str) -> WeightsSource:
    return WeightsSource.recorded(recorded, text)


@functools.lru_cache(maxsize=256)
def _field(text: str) -> ReceptiveField:
    return ReceptiveField.from_dict(json.loads(text))


def _exemplar(r: sqlite3.Row) -> ExemplarRecord:
    return ExemplarRecord(r["id"], r["kind"], r["rank"], r["image"], r["path"], r["value"], r["y"], r["x"],
                          json.loads(r["box"]), json.loads(r["source_box"]), bool(r["has_crop"]))


def _render(r: sqlite3.Row) -> RenderRecord:
    return RenderRecord(r["id"], r["unit"], r["objective"], r["recipe_name"], _recipe(r["recipe"]), r["seed"],
                        _settings(r["settings"]), r["status"], r["initial_activation"],
                        r["final_activation"], r["activation_ratio"], r["robustness"], r["high_frequency_share"],
                        r["file"], r["array_file"], r["seconds"], r["message"])


def _model(r: sqlite3.Row) -> ModelRecord:
    # schema 1 has no such column (sqlite3.Row's `in` looks at values, hence keys())
    recorded = r["weights_source"] if "weights_source" in r.keys() else None  # noqa: SIM118
    return ModelRecord(r["id"], r["name"], _weights(recorded, r["weights"]), r["weights_hash"], r["source"],
                       _preprocessing(r["preprocessing"]))


def _layer(r: sqlite3.Row) -> LayerRecord:
    field = _field(r["receptive_field"]) if r["receptive_field"] else None
    return LayerRecord(r["id"], r["model_id"], r["name"], r["channels"], json.loads(r["shape"]), field)


class AtlasReader:
    """Queries over an open atlas connection (``self._conn``; ``self.path`` is the atlas folder)."""

    path: Path
    _conn: sqlite3.Connection

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read inside sees one state of the atlas (a read transaction: in WAL mode a build that writes
        meanwhile is neither blocked nor seen halfway). Nested, or inside a write transaction: that one."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")

    @contextmanager
    def records(self) -> Iterator[sqlite3.Connection]:
        """The connection inside a :meth:`snapshot`, for the queries a stage owns (the files its records name,
        for ``atlas check``: :meth:`~filterscope.atlas.stages.Stage.files`)."""
        with self.snapshot():
            yield self._conn

    def file_count(self) -> int:
        """How many files the atlas recorded with their size and SHA-256 (schema 6)."""
        return int(self._conn.execute("SELECT COUNT(*) FROM files").fetchone()[0])

    # ------------------------------------------------------------------------------- models, layers
    def models(self) -> list[ModelRecord]:
        return [_model(r) for r in self._conn.execute("SELECT * FROM models ORDER BY id")]

    def model(self, name: str | None = None) -> ModelRecord:
        """The model called ``name`` (any of them when ``None`` and the atlas has exactly one)."""
        models = self.models()
        if not models:
            raise AtlasError(f"The atlas {self.path} holds no model yet")
        if name is None:
            if len({m.name for m in models}) > 1:
                raise AtlasError(f"The atlas {self.path} holds several models ({', '.join(m.name for m in models)}): "
                                 "name one with --model")
            return models[-1]
        matching = [m for m in models if m.name == name]
        if not matching:
            raise AtlasError(f"No model {name!r} in the atlas {self.path} (it holds "
                             f"{', '.join(m.name for m in models)}).{did_you_mean(name, [m.name for m in models])}")
        return matching[-1]

    def layers(self, model_id: int | None = None) -> list[LayerRecord]:
        query = "SELECT * FROM layers" + (" WHERE model_id = ?" if model_id is not None else "") + " ORDER BY id"
        return [_layer(r) for r in self._conn.execute(query, () if model_id is None else (model_id,))]

    def layer(self, model: ModelRecord, name: str) -> LayerRecord:
        layers = self.layers(model.id)
        for layer in layers:
            if layer.name == name:
                return layer
        names = [layer.name for layer in layers]
        raise AtlasError(f"No layer {name!r} of {model.name} in the atlas {self.path} (it holds "
                         f"{', '.join(names) or 'none'}).{did_you_mean(name, names)}")

    def layer_by_id(self, layer_id: int) -> LayerRecord:
        row = self._conn.execute("SELECT * FROM layers WHERE id = ?", (layer_id,)).fetchone()
        if row is None:
            raise AtlasError(f"No layer {layer_id} in the atlas {self.path}")
        return _layer(row)

    # ------------------------------------------------------------------------------------- renders
    def renders(self, layer_id: int, unit: int | None = None) -> list[RenderRecord]:
        query = "SELECT * FROM renders WHERE layer_id = ?" + (" AND unit = ?" if unit is not None else "")
        rows = self._conn.execute(query + " ORDER BY unit, recipe_name, seed, id",
                                  (layer_id,) if unit is None else (layer_id, unit))
        return [_render(r) for r in rows]

    def render_ids(self, layer_id: int, units: Sequence[int]) -> dict[int, int]:
        """The first finished (ok, inactive or not-improved) render of each of ``units`` that has a file:
        ``{unit: render id}``."""
        wanted = sorted({int(u) for u in units})
        found: dict[int, int] = {}
        marks = ", ".join("?" * len(wanted))
        done = ", ".join(f"'{s}'" for s in FINISHED)
        for r in self._conn.execute(f"SELECT id, unit FROM renders WHERE layer_id = ? AND unit IN ({marks}) AND status "
                                    f"IN ({done}) AND file IS NOT NULL ORDER BY id", (layer_id, *wanted)):
            found.setdefault(int(r["unit"]), int(r["id"]))
        return found

    def render(self, render_id: int) -> RenderRecord:
        row = self._conn.execute("SELECT * FROM renders WHERE id = ?", (render_id,)).fetchone()
        if row is None:
            raise AtlasError(f"No render {render_id} in the atlas {self.path}")
        return _render(row)

    def recorded_file(self, path: str) -> tuple[int, str] | None:
        """The size and SHA-256 recorded for the atlas file ``path`` (schema 6); ``None`` when not recorded."""
        if self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'files'").fetchone() is None:
            return None
        row = self._conn.execute("SELECT size, sha256 FROM files WHERE path = ?", (path,)).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def pending_renders(self, keys: Sequence[str], retry_failed: bool = False) -> list[RenderJob]:
        """The planned renders among ``keys`` that are still to do (and the failed ones, when retrying)."""
        states = ("pending", "failed") if retry_failed else ("pending",)
        out: list[RenderJob] = []
        for start in range(0, len(keys), 500):
            part = list(keys[start:start + 500])
            out.extend(RenderJob(int(r["id"]), int(r["unit"]), r["key"]) for r in self._conn.execute(
                f"SELECT id, unit, key FROM renders WHERE key IN ({','.join('?' * len(part))}) AND status IN "
                f"({','.join('?' * len(states))}) ORDER BY layer_id, recipe_name, seed, unit", [*part, *states]))
        return out

    def most_used_recipe(self, model_id: int) -> Recipe | None:
        """The recipe of the most renders of a model, pending ones aside; ``None`` when none."""
        row = self._conn.execute(
            "SELECT r.recipe FROM renders r JOIN layers l ON l.id = r.layer_id WHERE l.model_id = ? AND "
            "r.status != 'pending' GROUP BY r.recipe ORDER BY COUNT(*) DESC, MIN(r.id) LIMIT 1", (model_id,)).fetchone()
        return _recipe(row[0]) if row is not None else None

    def render_counts(self, layer_id: int) -> dict[str, int]:
        """Units of a layer by the status of their renders."""
        return {r[0]: int(r[1]) for r in self._conn.execute(
            "SELECT status, COUNT(DISTINCT unit) FROM renders WHERE layer_id = ? GROUP BY status", (layer_id,))}

    def status(self) -> list[StatusRow]:
        """Renders per model, layer, recipe and seed: done (ok), inactive, not-improved, failed, pending."""
        rows = self._conn.execute(
            "SELECT m.name AS model, l.name AS layer, r.recipe_name, r.seed, "
            "SUM(r.status = 'ok') AS ok, SUM(r.status = 'inactive') AS inactive, "
            "SUM(r.status = 'not-improved') AS not_improved, SUM(r.status = 'failed') AS failed, "
            "SUM(r.status = 'pending') AS pending FROM renders r JOIN layers l ON l.id = r.layer_id "
            "JOIN models m ON m.id = l.model_id GROUP BY m.id, l.id, r.recipe, r.recipe_name, r.seed "
            "ORDER BY m.id, l.id, MIN(r.id), r.seed")
        return [StatusRow(r["model"], r["layer"], r["recipe_name"], r["seed"], r["ok"], r["inactive"], r["failed"],
                          r["pending"], r["not_improved"]) for r in rows]

    # -------------------------------------------------------------------------------------- passes
    def passes(self, layer_id: int) -> list[PassRecord]:
        rows = self._conn.execute("SELECT p.*, d.source, d.images FROM passes p JOIN datasets d ON d.id = p.dataset_id "
                                  "WHERE p.layer_id = ? ORDER BY p.id", (layer_id,))
        return [PassRecord(r["id"], r["layer_id"], r["dataset_id"], r["source"], r["images"], r["exemplars"],
                           r["status"], r["seconds"]) for r in rows]

    def latest_pass(self, layer_id: int) -> PassRecord | None:
        done = [p for p in self.passes(layer_id) if p.status == "done"]
        return done[-1] if done else None

    def pass_images(self, pass_id: int) -> list[str]:
        """The paths of a pass's dataset images, by index (the rows of its matrices)."""
        return [str(r[0]) for r in self._conn.execute(
            "SELECT d.path FROM passes p JOIN dataset_images d ON d.dataset_id = p.dataset_id WHERE p.id = ? "
            "ORDER BY d.idx", (pass_id,))]

    def pass_image(self, pass_id: int, index: int) -> str:
        """The path of one dataset image of a pass, by index (without reading all of them)."""
        row = self._conn.execute("SELECT d.path FROM passes p JOIN dataset_images d ON d.dataset_id = p.dataset_id "
                                 "WHERE p.id = ? AND d.idx = ?", (pass_id, index)).fetchone()
        if row is None:
            raise AtlasError(f"No image {index} in exemplar pass {pass_id} of the atlas {self.path}")
        return str(row[0])

    def pass_fit(self, pass_id: int) -> str:
        """How the pass fitted its images to the input (``crop``, ``squash``, ``pad``; ``crop`` when unknown)."""
        row = self._conn.execute("SELECT settings FROM passes WHERE id = ?", (pass_id,)).fetchone()
        return str(json.loads(row[0]).get("fit", "crop")) if row is not None else "crop"

    def pass_maxima_file(self, pass_id: int) -> str | None:
        """The maxima matrix file of a finished pass, relative to the atlas (``None`` if unfinished)."""
        row = self._conn.execute("SELECT maxima_file FROM passes WHERE id = ? AND status = 'done'",
                                 (pass_id,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def matrix(self, pass_id: int, which: str = "means") -> np.ndarray:
        """The images x units matrix of a finished pass (``means`` or ``maxima``), memory-mapped."""
        row = self._conn.execute(f"SELECT {'means_file' if which == 'means' else 'maxima_file'} FROM passes "
                                 "WHERE id = ? AND status = 'done'", (pass_id,)).fetchone()
        if row is None or row[0] is None:
            raise AtlasError(f"No finished pass {pass_id} in the atlas {self.path}")
        return np.load(self.path / row[0], mmap_mode="r")

    def crops_done(self, pass_id: int) -> int:
        """How many units of a pass have their exemplar crops."""
        row = self._conn.execute("SELECT COUNT(DISTINCT unit) FROM exemplars WHERE pass_id = ? AND crop IS NOT NULL",
                                 (pass_id,)).fetchone()
        return int(row[0])

    def exemplars_without_crops(self, pass_id: int, units: Sequence[int]) -> list[CropJob]:
        """The exemplars of ``units`` whose crops are still to cut, by dataset image."""
        unit_set = set(units)
        rows = self._conn.execute("SELECT e.id, e.unit, e.box, d.path FROM exemplars e JOIN passes p ON "
                                  "p.id = e.pass_id JOIN dataset_images d ON d.dataset_id = p.dataset_id AND "
                                  "d.idx = e.image WHERE e.pass_id = ? AND e.crop IS NULL ORDER BY e.image",
                                  (pass_id,)).fetchall()
        return [CropJob(int(r["id"]), int(r["unit"]), r["path"], json.loads(r["box"])) for r in rows
                if r["unit"] in unit_set]

    # --------------------------------------------------------------------------------------- units
    def unit(self, layer: str, unit: int, model: str | None = None) -> UnitRecord:
        """Everything about one unit: its renders, exemplars (from the latest finished pass) and statistics.

        Raises:
            AtlasError: no such model, layer or unit in the atlas.
        """
        with self.snapshot():  # its renders, statistics and exemplars as of one moment, even during a build
            return self._unit(layer, unit, model)

    def _unit(self, layer: str, unit: int, model: str | None) -> UnitRecord:
        model_record = self.model(model)
        layer_record = self.layer(model_record, layer)
        if not 0 <= unit < layer_record.channels:
            raise AtlasError(f"Unit {unit} is out of range for layer {layer} of {model_record.name}, which has "
                             f"{layer_record.channels} units (0-{layer_record.channels - 1})")
        found = self.latest_pass(layer_record.id)
        exemplars: dict[str, list[ExemplarRecord]] = {}
        stats = None
        if found is not None:
            rows = self._conn.execute(
                "SELECT e.id, e.kind, e.rank, e.image, e.value, e.y, e.x, e.box, e.source_box, e.crop IS NOT NULL AS "
                "has_crop, d.path FROM exemplars e JOIN dataset_images d ON d.dataset_id = ? AND d.idx = e.image "
                "WHERE e.pass_id = ? AND e.unit = ? ORDER BY e.kind, e.rank", (found.dataset_id, found.id, unit))
            for r in rows:
                exemplars.setdefault(r["kind"], []).append(_exemplar(r))
            stats = self.unit_stats(found.id, unit)
        return UnitRecord(model_record.name, layer_record.name, unit, layer_record.channels,
                          self.renders(layer_record.id, unit), exemplars, stats,
                          found.dataset_source if found else None, self.path)

    def unit_stats(self, pass_id: int, unit: int) -> UnitStats | None:
        s = self._conn.execute("SELECT * FROM unit_stats WHERE pass_id = ? AND unit = ?", (pass_id, unit)).fetchone()
        if s is None:
            return None
        return UnitStats(s["mean"], s["std"], s["max"], s["min"], s["fraction_positive"], s["images"],
                         json.loads(s["histogram"]))

    def layer_summary(self, layer_id: int) -> list[UnitSummary]:
        """One row per unit of a layer (units without renders, statistics or exemplars included): its first
        finished render, its statistics from the latest pass and its top exemplar with a crop, for grids and
        sorting."""
        rows = [UnitSummary(u) for u in range(self.layer_by_id(layer_id).channels)]
        for r in self._conn.execute("SELECT id, unit, status, final_activation, robustness FROM renders WHERE "
                                    "layer_id = ? AND status != 'pending' ORDER BY id DESC", (layer_id,)):
            row = rows[r["unit"]]
            if r["status"] in FINISHED or row.render is None:
                row.render = r["id"] if r["status"] != "failed" else None
                row.status, row.final_activation, row.robustness = r["status"], r["final_activation"], r["robustness"]
        found = self.latest_pass(layer_id)
        if found is not None:
            for s in self._conn.execute("SELECT unit, max, fraction_positive FROM unit_stats WHERE pass_id = ?",
                                        (found.id,)):
                rows[s["unit"]].max, rows[s["unit"]].fraction_positive = s["max"], s["fraction_positive"]
            for e in self._conn.execute("SELECT id, unit FROM exemplars WHERE pass_id = ? AND kind = 'max' AND "
                                        "rank = 0 AND crop IS NOT NULL", (found.id,)):
                rows[e["unit"]].exemplar = e["id"]
        return rows

    def cofiring(self, layer: str, unit: int, k: int = 8, model: str | None = None) -> list[tuple[int, float]]:
        """The ``k`` (at most 16) units of the same layer whose per-image mean activations correlate most with
        ``unit``'s over the dataset of the latest pass (Pearson), as ``(unit, correlation)``, strongest first;
        computed when the pass finished (:func:`~filterscope.atlas.exemplars.cofiring`)."""
        layer_record = self.layer(self.model(model), layer)
        found = self.latest_pass(layer_record.id)
        if found is None:
            return []
        row = self._conn.execute("SELECT cofiring FROM unit_stats WHERE pass_id = ? AND unit = ?",
                                 (found.id, unit)).fetchone()
        return [(int(u), float(c)) for u, c in json.loads(row[0])[:k]] if row is not None else []

    # ------------------------------------------------------------------------------------ exemplars
    def exemplar(self, exemplar_id: int) -> tuple[ExemplarRecord, int, int]:
        """An exemplar with the pass's layer id and the unit it belongs to."""
        r = self._conn.execute(
            "SELECT e.*, e.crop IS NOT NULL AS has_crop, d.path, p.layer_id FROM exemplars e JOIN passes p ON "
            "p.id = e.pass_id JOIN dataset_images d ON d.dataset_id = p.dataset_id AND d.idx = e.image "
            "WHERE e.id = ?", (exemplar_id,)).fetchone()
        if r is None:
            raise AtlasError(f"No exemplar {exemplar_id} in the atlas {self.path}")
        return _exemplar(r), int(r["layer_id"]), int(r["unit"])

    def exemplar_image(self, exemplar_id: int, thumbnail: bool = False) -> bytes:
        """The JPEG crop (or thumbnail) of an exemplar."""
        column = "thumbnail" if thumbnail else "crop"
        row = self._conn.execute(f"SELECT {column} FROM exemplars WHERE id = ?", (exemplar_id,)).fetchone()
        if row is None or row[0] is None:
            raise AtlasError(f"No {'thumbnail' if thumbnail else 'crop'} for exemplar {exemplar_id} in {self.path}")
        return bytes(row[0])

    # ---------------------------------------------------------------------------------------- trust
    @property
    def _has_trust(self) -> bool:
        """Whether the database has the trust table (an atlas of schema 3 or older read as it is does not)."""
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'unit_trust'"
                                  ).fetchone() is not None

    def unit_trust(self, layer_id: int, unit: int | None = None) -> dict[int, UnitTrust]:
        """The trust records of a layer's units (or of ``unit`` alone), by unit (those the atlas holds)."""
        if not self._has_trust:
            return {}
        query = "SELECT unit, data FROM unit_trust WHERE layer_id = ?" + (" AND unit = ?" if unit is not None else "")
        return {int(r["unit"]): UnitTrust.from_dict(json.loads(r["data"])) for r in self._conn.execute(
            query + " ORDER BY unit", (layer_id,) if unit is None else (layer_id, unit))}

    def units_with_trust(self, layer_id: int) -> set[int]:
        """The units of a layer that have a trust record (without reading the records)."""
        if not self._has_trust:
            return set()
        return {int(r[0]) for r in self._conn.execute("SELECT unit FROM unit_trust WHERE layer_id = ?", (layer_id,))}

    # ------------------------------------------------------------------------------------- circuits
    @property
    def _has_circuits(self) -> bool:
        """Whether the database has the circuit tables (an atlas of schema 2 read as it is does not)."""
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'unit_circuits'"
                                  ).fetchone() is not None

    def circuit_pair(self, source_layer_id: int, target_layer_id: int) -> CircuitPair | None:
        if not self._has_circuits:
            return None
        r = self._conn.execute("SELECT * FROM circuit_pairs WHERE source_layer_id = ? AND target_layer_id = ?",
                               (source_layer_id, target_layer_id)).fetchone()
        if r is None:
            return None
        kh, kw = json.loads(r["kernel"])
        return CircuitPair(r["source_layer_id"], r["target_layer_id"], (kh, kw), r["file"], r["sha256"],
                           r["seconds"] or 0.0)

    def circuit_sections(self, layer_id: int, unit: int) -> CircuitSections:
        """A unit's circuit sections (``inputs``, ``outputs``, ``classes``: ``None`` where the atlas has none)."""
        if not self._has_circuits:
            return CircuitSections()
        found = {r["section"]: section_from_dict(r["section"], json.loads(r["data"])) for r in self._conn.execute(
            "SELECT section, data FROM unit_circuits WHERE layer_id = ? AND unit = ?", (layer_id, unit))}
        inputs, outputs, classes = found.get("inputs"), found.get("outputs"), found.get("classes")
        return CircuitSections(inputs if isinstance(inputs, InputsSection) else None,
                               outputs if isinstance(outputs, OutputsSection) else None,
                               classes if isinstance(classes, ClassesSection) else None)

    def top_exemplars(self, pass_id: int, units: Sequence[int], n: int) -> list[tuple[int, str, int, int]]:
        """The top ``n`` exemplars by maximum of each of ``units`` in a pass: ``(unit, path, y, x)``."""
        wanted = set(units)
        rows = self._conn.execute(
            "SELECT e.unit, d.path, e.y, e.x FROM exemplars e JOIN passes p ON p.id = e.pass_id JOIN dataset_images d "
            "ON d.dataset_id = p.dataset_id AND d.idx = e.image WHERE e.pass_id = ? AND e.kind = 'max' AND e.rank < ? "
            "ORDER BY e.unit, e.rank", (pass_id, n))
        return [(int(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows if r[0] in wanted]

    def exemplar_images(self, pass_id: int, limit: int = 200) -> list[tuple[int, str, int]]:
        """The dataset images that are exemplars of some unit in a pass, ``(image index, path, an exemplar id)``,
        in image order, at most ``limit``."""
        rows = self._conn.execute(
            "SELECT e.image, d.path, MIN(e.id) FROM exemplars e JOIN passes p ON p.id = e.pass_id "
            "JOIN dataset_images d ON d.dataset_id = p.dataset_id AND d.idx = e.image WHERE e.pass_id = ? "
            "GROUP BY e.image ORDER BY e.image LIMIT ?", (pass_id, limit))
        return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]

    def units_with_section(self, layer_id: int, section: str) -> set[int]:
        """The units of a layer that have ``section``."""
        if not self._has_circuits:
            return set()
        return {int(r["unit"]) for r in self._conn.execute(
            "SELECT unit FROM unit_circuits WHERE layer_id = ? AND section = ?", (layer_id, section))}
