"""The red-team audit: do the trust signals catch units whose pictures lie on purpose?

:func:`audit_layer` builds a manipulated copy of the user's network (:mod:`.manipulations`: fooling and silent
units of one layer), renders every audited unit of it (both signs), computes each unit's trust record over held-out
photos (:func:`filterscope.trust.trust_units`: the photos are split in two, one half fits the manipulations, the
other is the dataset the trust scores read), and asks of each signal how well it tells the manipulated units from
the untouched ones of the same network: ROC AUC (scikit-learn's), and the share detected and the false-alarm rate
at the signal's default threshold.

The signals, each as a *suspicion* (larger: more suspicious) and a default threshold:

- ``another-path``: minus the path check's closeness; flagged ``another-path`` (p at most 0.1 against held-out
  exemplars, :mod:`filterscope.trust.paths`);
- ``renders-2afc``: minus the renders' 2-AFC score (both signs, as many references as renders, exact over every
  query pair; measured: a better suspicion than its gap to the unit's own exemplar sets, AUROC 0.92 against 0.71
  in the middle layer of Lite0); flagged where the trust record's render test is (p at most 0.1 against exemplar
  sets drawn from the unit's pools, held to people's share of their margin, :func:`filterscope.trust.render_test`);
- ``silent``: minus the log of the unit's largest activation on the photos over the layer's median unit's;
  flagged below :data:`SILENT_SHARE` of it (or the trust record's ``silent`` flag);
- ``overdrive``: the log of the render's activation over the unit's largest on the photos (no default threshold:
  an AUROC only).

``any`` is the union of the default flags, with the renders' ``not-improved``. Hand-written: no library audits
feature visualizations; the ROC is scikit-learn's.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..analysis.activations import checked_layer
from ..arguments import checked
from ..engine.objectives import Channel
from ..engine.recipes import Recipe, get_recipe
from ..engine.render import improved, render
from ..errors import InvalidOptionError
from ..layers import LayerRef
from ..trust import Independent, UnitTrust, trust_units
from ..trust.unit import unit_maxima
from ..zoo.model import LoadedModel, coerce_model
from .manipulations import Manipulated, NaturalDrift, manipulate, natural_drift, optimizer_images

__all__ = ["SIGNALS", "SILENT_SHARE", "AuditedUnit", "SignalScore", "AuditReport", "audit_layer", "MIN_PHOTOS"]

SIGNALS = ("another-path", "renders-2afc", "silent", "overdrive", "any")
SILENT_SHARE = 0.01
"""A unit whose largest activation on the photos is below this share of the layer's median unit's is silent."""
MIN_PHOTOS = 40
"""Photos the audit needs at least: half fit the manipulations, half are the trust scores' dataset."""
_GATE_UNITS = 4  # units of the original network whose renders teach the fooling gate


@dataclass(frozen=True)
class AuditedUnit:
    """One audited unit: ``kind`` (``fooling``, ``silent`` or ``untouched``), its fooling ``target``, each signal's
    ``suspicion``, the signals past their default threshold (``flagged``), and its trust record."""

    unit: int
    kind: str
    target: int | None
    suspicion: dict[str, float]
    flagged: tuple[str, ...]
    trust: UnitTrust

    def to_dict(self) -> dict[str, object]:
        return {"unit": self.unit, "kind": self.kind, "target": self.target, "suspicion": dict(self.suspicion),
                "flagged": list(self.flagged), "trust": self.trust.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditedUnit:
        target = data.get("target")
        return cls(int(data["unit"]), str(data["kind"]), None if target is None else int(target),
                   {str(k): float(v) for k, v in data["suspicion"].items()}, tuple(str(f) for f in data["flagged"]),
                   UnitTrust.from_dict(data["trust"]))


@dataclass(frozen=True)
class SignalScore:
    """How well ``signal`` catches units manipulated by ``kind``: ROC AUC against the untouched units, and at its
    default threshold the share of manipulated units detected and of untouched ones flagged (``None`` without a
    threshold)."""

    signal: str
    kind: str
    auroc: float
    detected: float | None
    false_alarm: float | None


@dataclass(frozen=True)
class AuditReport:
    """The audit of one layer (see the module docstring)."""

    model: str
    layer: str
    recipe: str
    photos: int
    units: tuple[AuditedUnit, ...]
    drift: NaturalDrift
    seconds: float

    def kinds(self) -> list[str]:
        """The manipulations audited, in order."""
        return [k for k in ("fooling", "silent") if any(u.kind == k for u in self.units)]

    def scores(self) -> list[SignalScore]:
        """Each signal against each manipulation (and all manipulations together, ``all``)."""
        from sklearn.metrics import roc_auc_score

        clean = [u for u in self.units if u.kind == "untouched"]
        out = []
        for kind in [*self.kinds(), "all"]:
            bad = [u for u in self.units if u.kind != "untouched" and kind in ("all", u.kind)]
            if not bad or not clean:
                continue
            for signal in SIGNALS:
                values = [u.suspicion[signal] for u in bad + clean]
                auroc = float(roc_auc_score([1] * len(bad) + [0] * len(clean), values))
                thresholded = signal != "overdrive"
                out.append(SignalScore(signal, kind, auroc,
                                       _share(bad, signal) if thresholded else None,
                                       _share(clean, signal) if thresholded else None))
        return out

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "layer": self.layer, "recipe": self.recipe, "photos": self.photos,
                "units": [u.to_dict() for u in self.units], "drift": self.drift.to_dict(), "seconds": self.seconds,
                "scores": [vars(s) for s in self.scores()]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditReport:
        return cls(str(data["model"]), str(data["layer"]), str(data["recipe"]), int(data["photos"]),
                   tuple(AuditedUnit.from_dict(u) for u in data["units"]), NaturalDrift.from_dict(data["drift"]),
                   float(data["seconds"]))


def _share(units: Sequence[AuditedUnit], signal: str) -> float:
    return sum(signal in u.flagged for u in units) / len(units)


def suspicion(record: UnitTrust, peak: float, median: float, reached: float) -> tuple[dict[str, float], list[str]]:
    """A unit's suspicion under each signal and the signals past their default threshold, from its trust record,
    its largest activation on the photos (``peak``), the layer's median unit's (``median``), and its maximizing
    renders' mean activation (``reached``)."""
    renders = record.score("renders")
    test = renders.test if renders is not None else None
    closeness = record.paths.closeness if record.paths is not None else None
    share = peak / median if median > 0 else 0.0
    values = {"another-path": -closeness if closeness is not None else 0.0,
              "renders-2afc": -test.score if test is not None else 0.0,
              "silent": -math.log10(max(share, 1e-12)),
              "overdrive": math.log10(max(reached, 1e-12) / max(peak, 1e-12))}
    flagged = [name for name, hit in (
        ("another-path", "another-path" in record.flags),
        ("renders-2afc", "renders-2afc" in record.flags),
        ("silent", share < SILENT_SHARE or "silent" in record.flags)) if hit]
    values["any"] = float(len(flagged) + ("not-improved" in record.flags))
    if flagged or "not-improved" in record.flags:
        flagged.append("any")
    return values, flagged


@dataclass(frozen=True)
class _Choice:
    fooling: dict[int, int]
    silent: list[int]
    untouched: list[int]
    teachers: list[int]


def _choose(channels: int, fooling: int, silent: int, untouched: int, seed: int) -> _Choice:
    """Seeded units: the manipulated, the untouched, each fooling unit's target, and the gate's teachers (never
    manipulated; targets and teachers are not audited where the layer has units to spare)."""
    wanted = 2 * fooling + silent + untouched
    if fooling + silent + untouched + 1 > channels or fooling + silent < 1 or untouched < 2:
        raise InvalidOptionError(f"The audit needs at least one manipulated and two untouched units, within the "
                                 f"layer's {channels} units; got {fooling} fooling, {silent} silent, {untouched} "
                                 "untouched")
    order = torch.randperm(channels, generator=torch.Generator().manual_seed(seed)).tolist()
    fooled, quiet = order[:fooling], order[fooling:fooling + silent]
    clean = order[fooling + silent:fooling + silent + untouched]
    spare = order[fooling + silent + untouched:] or clean
    targets = (spare + clean)[:fooling] if len(spare) < fooling else spare[:fooling]
    teachers = (order[wanted:] + clean)[:_GATE_UNITS]
    return _Choice(dict(zip(fooled, targets)), quiet, clean, teachers)


@checked
def audit_layer(model: LoadedModel | torch.nn.Module, layer: str | LayerRef, photos: torch.Tensor,
                independent: Independent, *, fooling: int = 4, silent: int = 4, untouched: int = 12,
                recipe: str | Recipe = "filterscope", copies: int = 3, judge: str | None = None, seed: int = 0,
                progress: Callable[[str], None] | None = None) -> AuditReport:
    """The audit of ``layer`` (see the module docstring) over ``photos`` ``(N, C, H, W)`` in [0, 1] at the model's
    input size (:data:`MIN_PHOTOS` at least; diverse ones: the trust scores read half of them), with ``fooling``,
    ``silent`` and ``untouched`` units drawn with ``seed``, ``copies`` renders of each sign per unit with
    ``recipe``; ``judge``: the 2-AFC task's (:data:`filterscope.trust.JUDGES`). ``progress(message)`` before each
    phase.

    Raises:
        InvalidOptionError: too few photos, a bad unit count, or an unknown recipe.
    """
    say = progress or (lambda message: None)
    started = time.perf_counter()
    loaded = coerce_model(model)
    ref, channels = checked_layer(loaded, layer)
    chosen_recipe = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    if photos.dim() != 4 or len(photos) < MIN_PHOTOS:
        raise InvalidOptionError(f"The audit needs at least {MIN_PHOTOS} photos (half fit the manipulations, half "
                                 f"are the trust scores' dataset); got {len(photos) if photos.dim() == 4 else 0}")
    if copies < 1:
        raise InvalidOptionError(f"--copies must be at least 1 (got {copies})")
    fit, held = photos[0::2], photos[1::2]
    choice = _choose(channels, fooling, silent, untouched, seed)
    say(f"teaching the fooling gate: {chosen_recipe.name} renders of {len(choice.teachers)} other units")
    optimized = optimizer_images(loaded, ref, choice.teachers, chosen_recipe, seed=seed + 1) if fooling else None
    say(f"manipulating {len(choice.fooling)} fooling and {len(choice.silent)} silent units of {ref}")
    manipulated = manipulate(loaded, ref, fit, fooling=choice.fooling, silent=choice.silent, optimized=optimized)
    peaks = unit_maxima(manipulated.model, ref, held, batch_size=32)  # (N, C): the drift's and the silent signal's
    drift = natural_drift(loaded, manipulated, held, after=peaks)
    units = [*choice.fooling, *choice.silent, *choice.untouched]
    say(f"rendering {len(units)} units, {copies} of each sign ({2 * copies * len(units)} renders)")
    renders = render(manipulated.model, [Channel(str(ref), u) for u in units] + [-Channel(str(ref), u) for u in units],
                     recipe=chosen_recipe, copies=copies, seed=seed)
    images = renders.images.reshape(2, len(units), copies, *renders.images.shape[1:])
    rose = improved(renders.initial_values, renders.values).reshape(2, len(units), copies)
    reached = renders.values.reshape(2, len(units), copies)[0].mean(dim=1)
    say(f"trust scores of {len(units)} units over {len(held)} held-out photos")
    records = trust_units(manipulated.model, ref, units, held, independent,
                          renders={u: images[0, i] for i, u in enumerate(units)},
                          negatives={u: images[1, i] for i, u in enumerate(units)},
                          statuses={u: "ok" if bool(rose[0, i].all()) else "not-improved" for i, u in enumerate(units)},
                          judge=judge, classes=False, seed=seed, k=min(copies, 9))
    audited = _audited(manipulated, units, records, peaks.amax(dim=0), reached)
    return AuditReport(loaded.name, str(ref), chosen_recipe.name, len(photos), audited, drift,
                       time.perf_counter() - started)


def _audited(manipulated: Manipulated, units: list[int], records: list[UnitTrust], peaks: torch.Tensor,
             reached: torch.Tensor) -> tuple[AuditedUnit, ...]:
    """Each unit's suspicions and flags, from its trust record, its largest activation on the held-out photos
    (``peaks``, per unit) and its maximizing renders' mean activation (``reached``)."""
    median = statistics.median(peaks.tolist())
    out = []
    for i, (unit, record) in enumerate(zip(units, records)):
        done = manipulated.of(unit)
        values, flagged = suspicion(record, float(peaks[unit]), median, float(reached[i]))
        out.append(AuditedUnit(unit, done.kind if done else "untouched", done.target if done else None, values,
                               tuple(flagged), record))
    return tuple(out)
