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

__all__ = ["AFCScore", "afc_pools", "machine_afc", "REFERENCE_KINDS", "AFC_TASKS", "AFC_K", "AFC_POOL"]

REFERENCE_KINDS = ("renders", "exemplars", "random")
AFC_TASKS = 200
AFC_K = 9
"""References of each kind per task, as Borowski et al. showed people."""
AFC_POOL = 30
"""The strongest and the weakest images a task draws its references and queries from (each)."""


@dataclass(frozen=True)
class AFCScore:
    """The 2-AFC score of one kind of reference: the share right, over how many tasks, with its standard error."""

    references: str
    score: float
    tasks: int
    stderr: float
    signs: str = "both"  # renders: "both" (maximizing and minimizing) or "max" (maximizing only)
    k: int = AFC_K  # positive references per task (and as many negatives)

    def to_dict(self) -> dict[str, object]:
        return {"references": self.references, "score": self.score, "tasks": self.tasks, "stderr": self.stderr,
                "signs": self.signs, "k": self.k}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AFCScore:
        """A stored score (one written before the fair task: renders of one sign, ``k`` 9)."""
        references = str(data["references"])
        return cls(references, float(data["score"]), int(data["tasks"]), float(data["stderr"]),
                   str(data.get("signs") or ("max" if references == "renders" else "both")),
                   int(data.get("k") or AFC_K))


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
