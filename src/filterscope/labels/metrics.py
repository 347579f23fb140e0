"""How well a description fits a unit: metrics of a unit's activations over images against many candidate label
vectors at once.

After NeuronEval (Oikarinen et al., ICML 2025): of the metrics that score a description against a unit's
activations, F1, IoU, Pearson correlation and AUPRC pass its two sanity checks (*missing labels*: a description
covering half of what the unit fires on must score lower; *extra labels*: one that also claims random images must
score lower); AUC, INVERT's metric, fails the first, since it hardly moves when rare positives go missing.
``tests/labels`` runs both checks. AUPRC is the default.

Each metric takes the activations ``(N,)`` and a boolean matrix ``(N, M)`` of M candidates, and gives ``(M,)``;
F1 and IoU read the unit as firing on its top :data:`TOP_SHARE` of images. AUPRC is given above its chance level,
the concept's prevalence ``p``: ``(AP - p) / (1 - p)`` (0 for activations unrelated to the concept, 1 for a
perfect ranking), so that a broad concept ("animal OR device") does not win by being common.

Hand-written and vectorized: one sort of the activations serves every candidate (scikit-learn's
``average_precision_score`` takes one label vector at a time, thousands of times per unit here); it is the
reference the tests compare with.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InvalidOptionError

__all__ = ["METRICS", "DEFAULT_METRIC", "TOP_SHARE", "metric"]

TOP_SHARE = 0.05
"""F1 and IoU read the unit as firing on this share of the images (its strongest)."""
DEFAULT_METRIC = "auprc"


def _auprc(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(values, descending=True, stable=True)
    hits = labels[order].double()
    cumulative = hits.cumsum(0)
    ranks = torch.arange(1, len(values) + 1, dtype=torch.float64)[:, None]
    total = hits.sum(0)
    precision = torch.where(total > 0, ((cumulative / ranks) * hits).sum(0) / total.clamp(min=1),
                            torch.zeros_like(total))
    prevalence = total / len(values)  # the average precision of activations unrelated to the concept
    return torch.where(prevalence < 1, (precision - prevalence) / (1 - prevalence).clamp(min=1e-12),
                       torch.zeros_like(total))


def _fired(values: torch.Tensor) -> torch.Tensor:
    count = max(1, round(TOP_SHARE * len(values)))
    fired = torch.zeros(len(values), dtype=torch.float64)
    fired[torch.argsort(values, descending=True, stable=True)[:count]] = 1.0
    return fired


def _f1(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    fired, hits = _fired(values), labels.double()
    both = fired @ hits
    return 2 * both / (fired.sum() + hits.sum(0)).clamp(min=1)


def _iou(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    fired, hits = _fired(values), labels.double()
    both = fired @ hits
    return both / (fired.sum() + hits.sum(0) - both).clamp(min=1)


def _pearson(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    v = values.double() - values.double().mean()
    h = labels.double() - labels.double().mean(0)
    return (v @ h) / (v.norm() * h.norm(dim=0)).clamp(min=1e-12)


def _auc(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    from scipy.stats import rankdata

    ranks = torch.from_numpy(rankdata(values.double().numpy()))[:, None]
    hits = labels.double()
    positives = hits.sum(0)
    negatives = len(values) - positives
    u = (ranks * hits).sum(0) - positives * (positives + 1) / 2
    return torch.where((positives > 0) & (negatives > 0), u / (positives * negatives).clamp(min=1),
                       torch.full_like(positives, 0.5))


METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "auprc": _auprc, "f1": _f1, "iou": _iou, "pearson": _pearson, "auc": _auc}
"""The metrics by name: AUPRC (default), F1, IoU, Pearson (NeuronEval's passing ones) and AUC (for comparison)."""


def metric(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The metric ``name``.

    Raises:
        InvalidOptionError: an unknown name, naming the choices.
    """
    if name not in METRICS:
        raise InvalidOptionError(f"Unknown metric {name!r}: expected one of {', '.join(METRICS)}")
    return METRICS[name]
