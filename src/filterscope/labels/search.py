"""Labels with evidence: the best formula for each unit by beam search, scored, with a p-value and its exemplars.

After INVERT (Bykov et al., NeurIPS 2023): formulas of AND, OR and NOT over the dataset's concepts, grown by beam
search (every concept alone, then each of the ``beam`` best joined to every concept by AND, OR or AND NOT, up to
``length`` concepts), scored by a NeuronEval-approved metric (:mod:`.metrics`, AUPRC by default) of the unit's
activation (its spatial maximum on each image) against where the formula holds.

The **p-value** is honest about the search: a permutation test of the whole search. The rank metrics (AUPRC, F1,
IoU, AUC) depend on the activations only through their order, so under the null (activations unrelated to the
concepts) the best score the search finds has one distribution for every unit of the dataset: the search is run
on ``null_draws`` random orders of the images (999), once per dataset, and a unit's p-value is the share of those best
scores at least its own, ``(1 + count) / (1 + draws)`` (for Pearson, which reads values, the same null of ranks
approximates it). The p-values are corrected over the units labelled (Benjamini-Hochberg, scipy); a unit is
*significant* at :data:`ALPHA`. (A split into a search half and a test half would be simpler, and fails where a
concept has one image, as each class of ``imagenet-sample`` does.) Each label also says how many of the unit's top
exemplars the formula covers, and which support and which contradict it.

Hand-written: no library searches formulas over a concept matrix (INVERT's code is tied to its data loaders).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InvalidOptionError
from .concepts import ConceptMatrix
from .formula import And, Concept, Formula, Not, Or, parse
from .metrics import DEFAULT_METRIC, metric

__all__ = ["UnitLabel", "best_formula", "label_units", "check_label", "search_null", "ALPHA", "TOP_EXEMPLARS",
           "NULL_DRAWS", "MIN_IMAGES"]

ALPHA = 0.05
"""Significance after the Benjamini-Hochberg correction over the units labelled."""
MIN_IMAGES = 3
"""Concepts shown by fewer images are not searched: a concept of one image fits, perfectly, any unit whose top image
it is (and the search's null would then be perfect too)."""
NULL_DRAWS = 999
"""Random orders of the images the search's null is measured on (the smallest p-value: 1 / 1,000; with 99, a layer
of 320 units could never pass the correction: 1 / 100 x 320 / rank is above 0.05 for fewer than 64 units)."""
TOP_EXEMPLARS = 20
"""The unit's top images the label's coverage, support and contradiction are read from."""


@dataclass(frozen=True)
class UnitLabel:
    """A unit's label: the ``formula`` (text), its ``score`` (``metric``), the raw (permutation) and
    corrected p-values, whether it is significant, the share of the unit's top exemplars it covers, and those
    exemplars that support it and that contradict it (image indices)."""

    unit: int
    formula: str
    metric: str
    score: float
    p_value: float
    q_value: float
    coverage: float
    support: tuple[int, ...]
    contradict: tuple[int, ...]
    source: str

    @property
    def significant(self) -> bool:
        return self.q_value <= ALPHA

    def to_dict(self) -> dict[str, object]:
        return {"unit": self.unit, "formula": self.formula, "metric": self.metric, "score": self.score,
                "p_value": self.p_value, "q_value": self.q_value, "significant": self.significant,
                "coverage": self.coverage, "support": list(self.support), "contradict": list(self.contradict),
                "source": self.source}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnitLabel:
        return cls(int(data["unit"]), str(data["formula"]), str(data["metric"]), float(data["score"]),
                   float(data["p_value"]), float(data["q_value"]), float(data["coverage"]),
                   tuple(int(i) for i in data["support"]), tuple(int(i) for i in data["contradict"]),
                   str(data["source"]))


def best_formula(values: torch.Tensor, present: torch.Tensor, *, metric_name: str = DEFAULT_METRIC,
                 length: int = 3, beam: int = 5, min_images: int = 1) -> tuple[Formula, float]:
    """The best formula of at most ``length`` concepts for activations ``values`` ``(N,)`` over the concept
    matrix ``present`` ``(N, K)``, by beam search (see the module docstring), with its score; formulas that hold
    on fewer than ``min_images`` images are not candidates (``dog AND NOT terrier AND NOT hound`` can carve out a
    single image, which fits any unit whose top image it is)."""
    metric_of = metric(metric_name)

    def score(v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        found = metric_of(v, labels)
        return torch.where(labels.sum(0) >= min_images, found, torch.full_like(found, -torch.inf))

    singles = score(values, present)
    order = torch.argsort(singles, descending=True, stable=True)[:beam].tolist()
    frontier: list[tuple[Formula, float, torch.Tensor]] = [
        (Concept(k), float(singles[k]), present[:, k]) for k in order]
    best = frontier[0][:2]
    for _ in range(length - 1):
        candidates: list[tuple[Formula, float, torch.Tensor]] = []
        for formula, _, holds in frontier:
            joined = {"AND": holds[:, None] & present, "OR": holds[:, None] | present,
                      "AND NOT": holds[:, None] & ~present}
            for how, labels in joined.items():
                scores = score(values, labels)
                for k in torch.argsort(scores, descending=True, stable=True)[:beam].tolist():
                    other: Formula = Not(Concept(k)) if how == "AND NOT" else Concept(k)
                    made = Or(formula, other) if how == "OR" else And(formula, other)
                    candidates.append((made, float(scores[k]), labels[:, k]))
        candidates.sort(key=lambda c: -c[1])
        frontier = candidates[:beam]
        if frontier and frontier[0][1] > best[1] + 1e-9:
            best = frontier[0][:2]
    return best


def search_null(present: torch.Tensor, *, metric_name: str = DEFAULT_METRIC, length: int = 3, beam: int = 5,
                draws: int = NULL_DRAWS, min_images: int = 1, seed: int = 0) -> torch.Tensor:
    """``(draws,)``: the best score the search finds for activations in a random order of the images (see the
    module docstring), sorted."""
    generator = torch.Generator().manual_seed(seed)
    ranks = torch.arange(present.shape[0], 0, -1, dtype=torch.float64)
    found = [best_formula(ranks[torch.randperm(present.shape[0], generator=generator)], present,
                          metric_name=metric_name, length=length, beam=beam, min_images=min_images)[1]
             for _ in range(draws)]
    return torch.tensor(sorted(found), dtype=torch.float64)


def _evidence(values: torch.Tensor, holds: torch.Tensor) -> tuple[float, tuple[int, ...], tuple[int, ...]]:
    top = torch.argsort(values, descending=True, stable=True)[:TOP_EXEMPLARS].tolist()
    support = tuple(i for i in top if bool(holds[i]))
    return len(support) / max(1, len(top)), support, tuple(i for i in top if not bool(holds[i]))


def _tested(values: torch.Tensor, holds: torch.Tensor) -> float:
    from scipy.stats import mannwhitneyu

    inside, outside = values[holds], values[~holds]
    if len(inside) == 0 or len(outside) == 0:
        return 1.0
    return float(mannwhitneyu(inside.numpy(), outside.numpy(), alternative="greater").pvalue)


def label_units(values: torch.Tensor, concepts: ConceptMatrix, units: Sequence[int] | None = None, *,
                metric_name: str = DEFAULT_METRIC, length: int = 3, beam: int = 5, null_draws: int = NULL_DRAWS,
                min_images: int = MIN_IMAGES, seed: int = 0, progress: Callable[[int, int], None] | None = None
                ) -> list[UnitLabel]:
    """The labels of ``units`` (default all) of a layer whose activation on each image is ``values`` ``(N, C)``,
    over ``concepts`` (the same images, in order) shown by at least ``min_images`` images each; see the module
    docstring.

    Raises:
        InvalidOptionError: the activations and the concepts cover different images, too few images, a bad metric,
            length, beam or number of null draws.
    """
    if values.shape[0] != concepts.images:
        raise InvalidOptionError(f"{values.shape[0]} images of activations against {concepts.images} of concepts")
    if concepts.images < 8 or length < 1 or beam < 1 or null_draws < 1:
        raise InvalidOptionError(f"Labels need at least 8 images, a length, a beam and null draws of at least 1 "
                                 f"(got {concepts.images}, {length}, {beam}, {null_draws})")
    metric(metric_name)  # a bad name fails before any work
    chosen = list(range(values.shape[1])) if units is None else list(units)
    kept = torch.nonzero(concepts.present.sum(0) >= min_images).flatten()
    if not len(kept):
        raise InvalidOptionError(f"No concept is shown by {min_images} images or more: give more images")
    present, names = concepts.present[:, kept], [concepts.names[k] for k in kept.tolist()]
    null = search_null(present, metric_name=metric_name, length=length, beam=beam, draws=null_draws,
                       min_images=min_images, seed=seed)
    found = []
    for n, unit in enumerate(chosen):
        column = values[:, unit].double()
        formula, score = best_formula(column, present, metric_name=metric_name, length=length, beam=beam,
                                      min_images=min_images)
        holds = formula.evaluate(present)
        p_value = (1 + int((null >= score - 1e-12).sum())) / (1 + len(null))
        coverage, support, contradict = _evidence(column, holds)
        found.append((unit, formula.text(names), score, p_value, coverage, support, contradict))
        if progress is not None:
            progress(n + 1, len(chosen))
    q_values = _corrected([p for *_, p, _, _, _ in found])
    return [UnitLabel(unit, text, metric_name, score, p, q, coverage, support, contradict, concepts.source)
            for (unit, text, score, p, coverage, support, contradict), q in zip(found, q_values)]


def _corrected(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (scipy)."""
    if not p_values:
        return []
    from scipy.stats import false_discovery_control

    return [float(q) for q in false_discovery_control(p_values)]


def check_label(values: torch.Tensor, concepts: ConceptMatrix, unit: int, text: str, *,
                metric_name: str = DEFAULT_METRIC) -> UnitLabel:
    """Any description ``text`` (a formula over the concepts' names: ``terrier OR (dog AND NOT grass)``) scored for
    ``unit`` the way the search's labels are, over all the images (nothing was searched, so nothing is held out;
    its p-value is uncorrected)."""
    formula = parse(text, concepts.names)
    column = values[:, unit].double()
    holds = formula.evaluate(concepts.present)
    score = float(metric(metric_name)(column, holds[:, None])[0])
    p_value = _tested(column, holds)
    coverage, support, contradict = _evidence(column, holds)
    return UnitLabel(unit, formula.text(concepts.names), metric_name, score, p_value, p_value, coverage, support,
                     contradict, concepts.source)
