"""The machine 2-AFC score: how well a unit's explanation predicts which of two images drives it more.

After Borowski et al. 2021 (people shown a unit's references chose the more strongly activating of two query
images right 92 ± 2 % of the time with natural exemplars, 82 ± 4 % with synthetic visualizations) and the Machine
Interpretability Score of Zimmermann, Klindt and Brendel 2024 (the same task with a machine judging similarity in
an independent network's features). One task:

- the **references**: the unit's renders, or ``k`` of its top exemplars with ``k`` bottom ones (Borowski's
  natural condition), or, as the control, ``k`` and ``k`` images drawn at random from the dataset;
- the **queries**: one held-out image from the unit's strongest pool (the ``pool`` images with the largest
  activation) and one from its weakest pool (the smallest), never among the references;
- the answer: the query whose features are closer to the positive references than to the negative ones (mean
  cosine similarity to the positives, minus that to the negatives where there are any) is taken to be the strong
  one; the task is right when it is. Ties count half.

The score is the share of right answers over ``tasks`` seeded tasks, with its standard error; chance is 0.5.
Renders come in both signs, as Borowski et al. showed people: renders *maximizing* the unit are the positive
references and renders *minimizing* it the negative ones (``negatives``). A score from renders of one sign only
says so (``AFCScore.signs == "max"``): it is not comparable with the exemplars' (the task is easier with
negatives, measured in ``benchmarks/judges.py``).

**Are the renders as informative as the unit's own exemplars?** (:func:`render_test`, the ``renders-2afc`` flag.)
The null is measured on the user's data: ``draws`` sets of ``k`` strong and ``k`` weak references drawn from the
unit's pools with the renders put in them (a permutation test: under the null the renders are just more of the
unit's images), each scored exactly, over every pair of the other images as queries, as the renders are. The
p-value is the share of exemplar sets scoring no higher than the renders, ``(1 + count) / (1 + draws)``; the
flag is raised at p at most :data:`RENDER_ALPHA`, so renders exchangeable with exemplars are flagged
``floor(alpha (draws + 1)) / (draws + 1)`` of the time: the stated false-alarm rate. Renders are compared with a
``share`` of the exemplar sets' margin above chance (1: as informative as exemplars; by default
:data:`RENDER_SHARE`, people's ratio; the red-team audit measures the rate on honest renders).

The features are the judge's (:mod:`.judges`), standardized over the dataset. Each unit's tasks are seeded with
the seed and the unit, so two units never share their draws (shared draws move every unit's random control the
same way).

Hand-written: a few lines over a feature matrix; the MIS code is tied to its own models and data loaders.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InvalidOptionError

__all__ = ["AFCScore", "RenderTest", "afc_pools", "machine_afc", "render_test", "REFERENCE_KINDS", "AFC_TASKS",
           "AFC_K", "AFC_POOL", "RENDER_ALPHA", "RENDER_SHARE", "NULL_DRAWS"]

REFERENCE_KINDS = ("renders", "exemplars", "random")
AFC_TASKS = 200
AFC_K = 9
"""References of each kind per task, as Borowski et al. showed people."""
AFC_POOL = 30
"""The strongest and the weakest images a task draws its references and queries from (each)."""
RENDER_ALPHA = 0.1
"""Renders whose p-value against the unit's own exemplar sets is at most this are flagged ``renders-2afc``."""
RENDER_SHARE = 0.76
"""The share of the exemplar sets' margin above chance that renders are held to by default: people's, (82 - 50) /
(92 - 50) (Borowski et al. 2021: honest visualizations carry about three quarters of what natural exemplars do).
At 1.0, renders of honest units of Lite0 were flagged 17-50 % of the time in the red-team audit (their renders are
often less informative than their exemplars); at 0.76, 17-25 %, detecting as many fooling units."""
NULL_DRAWS = 99
"""Exemplar sets the renders are ranked among (99: a false-alarm rate of exactly 0.1 at ``RENDER_ALPHA``)."""


@dataclass(frozen=True)
class RenderTest:
    """The renders against the unit's own exemplars (see the module docstring).

    Attributes:
        score: The renders' exact score (over every query pair).
        null: Each drawn exemplar set's exact score, sorted.
        p_value: The share of exemplar sets no better than the renders (with the renders: ``(1 + count) / (1 + n)``).
        alpha: The flag's threshold; ``false_alarm``: its rate for renders exchangeable with exemplars.
        share: The share of the exemplar sets' margin above chance the renders were held to.
    """

    score: float
    null: tuple[float, ...]
    p_value: float
    alpha: float
    false_alarm: float
    share: float = 1.0

    @property
    def flagged(self) -> bool:
        return self.p_value <= self.alpha

    @property
    def median(self) -> float:
        """The exemplar sets' median score: what the renders are measured against."""
        return self.null[len(self.null) // 2] if self.null else 0.5

    def to_dict(self) -> dict[str, object]:
        return {"score": self.score, "null": list(self.null), "p_value": self.p_value, "alpha": self.alpha,
                "false_alarm": self.false_alarm, "share": self.share}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RenderTest:
        return cls(float(data["score"]), tuple(float(v) for v in data["null"]), float(data["p_value"]),
                   float(data["alpha"]), float(data["false_alarm"]), float(data.get("share", 1.0)))


@dataclass(frozen=True)
class AFCScore:
    """The 2-AFC score of one kind of reference: the share right, over how many tasks, with its standard error."""

    references: str
    score: float
    tasks: int
    stderr: float
    signs: str = "both"  # renders: "both" (maximizing and minimizing) or "max" (maximizing only)
    k: int = AFC_K  # positive references per task (and as many negatives)
    test: RenderTest | None = None  # renders: against the unit's own exemplar sets

    def to_dict(self) -> dict[str, object]:
        return {"references": self.references, "score": self.score, "tasks": self.tasks, "stderr": self.stderr,
                "signs": self.signs, "k": self.k, "test": self.test.to_dict() if self.test else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AFCScore:
        """A stored score (one written before the fair task: renders of one sign, ``k`` 9)."""
        references = str(data["references"])
        test = data.get("test")
        return cls(references, float(data["score"]), int(data["tasks"]), float(data["stderr"]),
                   str(data.get("signs") or ("max" if references == "renders" else "both")),
                   int(data.get("k") or AFC_K), RenderTest.from_dict(test) if isinstance(test, Mapping) else None)


def afc_pools(values: torch.Tensor, pool: int = AFC_POOL) -> tuple[torch.Tensor, torch.Tensor]:
    """The indices of the ``pool`` largest and the ``pool`` smallest of ``values`` ``(N,)`` (ties by index), each at
    most half of the images so that the two never overlap."""
    size = min(pool, values.shape[0] // 2)
    order = torch.argsort(values.double(), descending=True, stable=True)
    return order[:size], order.flip(0)[:size]


def _similarity(query: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None) -> float:
    """Mean cosine similarity of ``query`` ``(D,)`` to ``positives`` minus that to ``negatives`` (if any)."""
    def mean_cosine(refs: torch.Tensor) -> float:
        return float(torch.nn.functional.cosine_similarity(query[None], refs, dim=1).mean())

    return mean_cosine(positives) - (mean_cosine(negatives) if negatives is not None and len(negatives) else 0.0)


def machine_afc(features: torch.Tensor, values: torch.Tensor, references: str, *,
                renders: torch.Tensor | None = None, negatives: torch.Tensor | None = None, tasks: int = AFC_TASKS,
                k: int = AFC_K, pool: int = AFC_POOL, seed: int = 0) -> AFCScore:
    """The score with ``references`` (one of :data:`REFERENCE_KINDS`) for a unit whose activation on each dataset
    image is ``values`` ``(N,)``, the images' judged features being ``features`` ``(N, D)`` (``renders``
    ``(R, D)``: the features of renders maximizing the unit, for ``references="renders"``; ``negatives``: of
    renders minimizing it, when there are any).

    Raises:
        InvalidOptionError: an unknown kind, renders missing, or too few images for ``k`` references and a query
            in each pool (``2 * (k + 1)`` at least).
    """
    if references not in REFERENCE_KINDS:
        raise InvalidOptionError(f"Unknown references {references!r}: expected one of {', '.join(REFERENCE_KINDS)}")
    if references == "renders" and (renders is None or not len(renders)):
        raise InvalidOptionError("references='renders' needs the renders' features")
    strong, weak = afc_pools(values, pool)
    if len(strong) < k + 1:
        raise InvalidOptionError(f"The 2-AFC task needs at least {2 * (k + 1)} images for {k} references and a query "
                                 f"per pool; got {values.shape[0]}")
    generator = torch.Generator().manual_seed(seed)
    right = 0.0
    for _ in range(tasks):
        s = strong[torch.randperm(len(strong), generator=generator)]
        w = weak[torch.randperm(len(weak), generator=generator)]
        q_strong, q_weak = int(s[0]), int(w[0])
        against: torch.Tensor | None
        if references == "exemplars":
            positives, against = features[s[1:k + 1]], features[w[1:k + 1]]
        elif references == "random":
            others = torch.tensor([i for i in range(features.shape[0]) if i not in (q_strong, q_weak)])
            drawn = others[torch.randperm(len(others), generator=generator)[:2 * k]]
            positives, against = features[drawn[:k]], features[drawn[k:]]
        else:
            assert renders is not None
            positives, against = renders, negatives
        a = _similarity(features[q_strong], positives, against)
        b = _similarity(features[q_weak], positives, against)
        right += 1.0 if a > b else 0.5 if a == b else 0.0
    score = right / tasks
    signs = "both" if references != "renders" or (negatives is not None and len(negatives)) else "max"
    count = len(renders) if references == "renders" and renders is not None else k
    return AFCScore(references, score, tasks, math.sqrt(score * (1 - score) / tasks), signs, count)


def _exact(queries: torch.Tensor, strong: torch.Tensor, weak: torch.Tensor, positives: torch.Tensor,
           negatives: torch.Tensor | None) -> float:
    """The task's score averaged exactly over every (strong, weak) query pair: ``queries`` ``(Q, D)`` unit-normed
    features, ``strong`` and ``weak`` index them, the references unit-normed too."""
    similarity = queries @ positives.T.mean(dim=1)
    if negatives is not None and len(negatives):
        similarity = similarity - queries @ negatives.T.mean(dim=1)
    a, b = similarity[strong][:, None], similarity[weak][None, :]
    return float(((a > b).double() + 0.5 * (a == b).double()).mean())


def render_test(features: torch.Tensor, values: torch.Tensor, renders: torch.Tensor,
                negatives: torch.Tensor | None = None, *, pool: int = AFC_POOL, draws: int = NULL_DRAWS,
                alpha: float = RENDER_ALPHA, share: float = 1.0, seed: int = 0) -> RenderTest:
    """The renders (features ``(R, D)``, ``negatives`` those of renders minimizing the unit) against ``draws`` sets
    of as many of the unit's own exemplars (see the module docstring), over the images' features ``(N, D)`` and the
    unit's activations ``values`` ``(N,)``.

    A permutation test: each drawn set takes its references from the strong pool with the maximizing renders in it
    (and the weak pool with the minimizing ones), its queries being the rest, so that for renders exchangeable with
    the pools' images every rank of the renders' score among the sets' is equally likely.

    Raises:
        InvalidOptionError: no renders, or too few images for a pool of at least two.
    """
    k = len(renders)
    m = len(negatives) if negatives is not None else 0
    strong, weak = afc_pools(values, pool)
    if k < 1 or len(strong) < 2:
        raise InvalidOptionError(f"The render test needs renders and at least 4 images; got {len(renders)} renders "
                                 f"and {values.shape[0]} images")
    parts = [features[strong], renders, features[weak]] + ([negatives] if negatives is not None and m else [])
    unit = torch.nn.functional.normalize(torch.cat(parts).double(), dim=1)
    s_all = torch.arange(len(strong) + k)
    w_all = torch.arange(len(s_all), len(unit))
    generator = torch.Generator().manual_seed(seed)

    def scored(p: torch.Tensor, n: torch.Tensor) -> float:
        queries_s = s_all[~torch.isin(s_all, p)]
        queries_w = w_all[~torch.isin(w_all, n)]
        return _exact(unit, queries_s, queries_w, unit[p], unit[n] if m else None)

    score = scored(s_all[len(strong):], w_all[len(weak):])
    null = [scored(s_all[torch.randperm(len(s_all), generator=generator)[:k]],
                   w_all[torch.randperm(len(w_all), generator=generator)[:m]]) for _ in range(draws)]
    held = [0.5 + share * (v - 0.5) for v in null]
    p_value = (1 + sum(v <= score for v in held)) / (1 + draws)
    false_alarm = int(alpha * (draws + 1) + 1e-9) / (draws + 1)
    return RenderTest(score, tuple(sorted(null)), p_value, alpha, false_alarm, share)
