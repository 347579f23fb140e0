"""Path similarity: does a unit's visualization drive the network the way its natural exemplars do?

After Geirhos, Zimmermann, Bilodeau, Brendel and Kim ("Don't trust your eyes: on the (un)reliability of feature
visualizations", ICML 2024): a visualization can maximize a unit through other channels than the ones natural
images use (their "fooling" networks make this happen on purpose; in ordinary networks they found it in most
layers). The check compares processing paths: at each earlier layer, each image is summarized by its spatially
averaged channel vector, and vectors are compared by Spearman's rank correlation, the measure Geirhos et al. used:

- **render**: the mean correlation of the render(s) with the unit's top exemplars;
- **upper band**: the mean correlation of the exemplars with each other (how alike natural images that drive the
  unit are);
- **lower band**: the mean correlation of random dataset images with the exemplars (how alike any natural image is).

Per layer, the render takes the exemplars' path when it sits above the lower band; the share of layers where it
does is the summary a reader sees. The flag is a test with a known false-alarm rate, not a fixed band: the
render's **closeness** (per layer, how far its correlation sits above the lower band, averaged over the layers)
is compared with the same closeness of each top exemplar held out from the others (the null: images that do take
the unit's natural path, measured on the user's own data), in a permutation test over the render and the
exemplars. Its p-value is the share of held-out exemplars no closer than the render, ``(1 + count) / (1 + n)``;
``another-path`` is flagged when it is at most :data:`PATH_ALPHA`. An image exchangeable with the exemplars is
then flagged ``floor(alpha (n + 1)) / (n + 1)`` of the time (1/11 with 10 exemplars; never with fewer than 9):
the flag's false-alarm rate, recorded with it. A unit whose exemplars do not drive it at all (their maximum is
not above 0) is flagged ``silent``: it has no natural path to compare with, so whatever its picture shows, it is
not what the unit does on the data.

Hand-written: no library computes this check; the ranks are scipy's, the correlations a matrix product.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from scipy.stats import rankdata

from ..layers import LayerRef, list_layers, resolve_layer
from ..metrics import to_input_size
from ..runtime.core import ANALYSIS_BATCH, Forward, Runtime
from ..zoo.model import LoadedModel

__all__ = ["PathSimilarity", "path_layers", "channel_vectors", "spearman", "path_similarity", "PATH_ALPHA",
           "SILENT_BELOW"]

PATH_ALPHA = 0.1
"""A render whose closeness has a p-value at most this (against held-out exemplars) takes another path."""

MIN_CHANNELS = 8
"""Layers with fewer channels are not compared: a rank correlation of a few values jumps with one swap."""

SILENT_BELOW = 1e-6
"""Exemplars whose largest activation is not above this do not drive the unit: it is silent on the data."""


@dataclass(frozen=True)
class PathSimilarity:
    """The path check of one unit (see the module docstring).

    Attributes:
        layers: The earlier layers compared, in the order they run.
        render, upper, lower: Per layer, the render↔exemplar, exemplar↔exemplar and random↔exemplar mean Spearman
            correlations.
        share: The share of layers where the render is above the lower band.
        exemplar_max: The largest activation of the unit over its exemplars.
        flags: ``another-path`` (``p_value`` at most :data:`PATH_ALPHA`) and/or ``silent`` (exemplar_max not above
            :data:`SILENT_BELOW`).
        closeness: The render's closeness: its correlation with the exemplars minus the random images', averaged
            over the layers.
        null: Each held-out exemplar's closeness to the others.
        p_value: The share of held-out exemplars no closer than the render (``None`` in a record from before).
        false_alarm: The flag's false-alarm rate on images that take the natural path (``floor(alpha (n+1))/(n+1)``).
    """

    layers: tuple[str, ...]
    render: tuple[float, ...]
    upper: tuple[float, ...]
    lower: tuple[float, ...]
    share: float
    exemplar_max: float
    flags: tuple[str, ...]
    closeness: float | None = None
    null: tuple[float, ...] = ()
    p_value: float | None = None
    false_alarm: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {"layers": list(self.layers), "render": list(self.render), "upper": list(self.upper),
                "lower": list(self.lower), "share": self.share, "exemplar_max": self.exemplar_max,
                "flags": list(self.flags), "closeness": self.closeness, "null": list(self.null),
                "p_value": self.p_value, "false_alarm": self.false_alarm}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PathSimilarity:
        def floats(key: str) -> tuple[float, ...]:
            return tuple(float(v) for v in data[key])

        def number(key: str) -> float | None:
            return None if data.get(key) is None else float(data[key])

        return cls(tuple(str(v) for v in data["layers"]), floats("render"), floats("upper"),
                   floats("lower"), float(data["share"]), float(data["exemplar_max"]),
                   tuple(str(v) for v in data["flags"]), number("closeness"),
                   tuple(float(v) for v in data.get("null") or ()), number("p_value"), number("false_alarm"))


def path_layers(model: LoadedModel, layer: str | LayerRef, count: int = 8) -> list[LayerRef]:
    """Up to ``count`` layers that run before ``layer``, evenly spaced in running order: those with a spatial grid
    (``(C, H, W)`` outputs) of at least :data:`MIN_CHANNELS` channels (ranks of fewer say little), not inside
    ``layer`` itself."""
    ref = resolve_layer(model, layer)
    infos = list_layers(model)
    names = [info.name for info in infos]
    if ref.name not in names:
        return []
    before = [info for info in infos[:names.index(ref.name)]
              if len(info.shape) == 3 and info.shape[0] >= MIN_CHANNELS and not info.name.startswith(ref.name + ".")
              and info.name]
    chosen = before if len(before) <= count else \
        [before[round(i * (len(before) - 1) / (count - 1))] for i in range(count)] if count > 1 else before[-1:]
    return [resolve_layer(model, info.name) for info in chosen]


def channel_vectors(model: LoadedModel, layers: Sequence[LayerRef], images: torch.Tensor, *,
                    runtime: Runtime | None = None, batch_size: int = ANALYSIS_BATCH) -> dict[LayerRef, torch.Tensor]:
    """Each image's spatially averaged channel vector at each of ``layers``: ``{layer: (N, C)}`` float32, for
    ``images`` ``(N,C,H,W)`` in [0, 1] (resized to the model's input)."""
    images = to_input_size(model, images)
    parts: dict[LayerRef, list[torch.Tensor]] = {ref: [] for ref in layers}
    with torch.no_grad(), Forward(model, list(layers), runtime) as forward:
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size].to(model.device)
            activations = forward(model.preprocessing.normalize(batch))
            for ref in layers:
                act = activations[ref]
                parts[ref].append(act.reshape(act.shape[0], act.shape[1], -1).mean(dim=2).cpu())
    return {ref: torch.cat(chunks) if chunks else torch.zeros(0, 0) for ref, chunks in parts.items()}


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks along the last dimension, ties given their average rank (scipy's ``rankdata``)."""
    return torch.from_numpy(rankdata(x.double().numpy(), axis=-1)).double()


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(n, m)``: Spearman's rank correlation of each row of ``a`` ``(n, C)`` with each row of ``b`` ``(m, C)``
    (0 where a row is constant)."""
    ra, rb = _ranks(a), _ranks(b)
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    na, nb = ra.norm(dim=1, keepdim=True), rb.norm(dim=1, keepdim=True)
    return (ra @ rb.T) / (na @ nb.T).clamp(min=1e-30)


def _closeness(similar: torch.Tensor, against: torch.Tensor) -> torch.Tensor:
    """For each item of a group whose pairwise correlations are ``similar`` ``(m, m)`` and whose correlations with
    random images are ``against`` ``(R, m)``: how far its mean correlation with the others sits above the random
    images' mean correlation with those others (a difference of correlations, so layers weigh alike; not divided by
    the band's width: where the bands meet, a ratio would explode)."""
    m = similar.shape[0]
    own = (similar.sum(dim=1) - similar.diagonal()) / (m - 1)
    lower = (against.sum() - against.sum(dim=0)) / (against.shape[0] * (m - 1))
    return own - lower


def path_similarity(render: Mapping[LayerRef, torch.Tensor], exemplars: Mapping[LayerRef, torch.Tensor],
                    randoms: Mapping[LayerRef, torch.Tensor], exemplar_max: float, *,
                    alpha: float = PATH_ALPHA) -> PathSimilarity:
    """The check from channel vectors (:func:`channel_vectors`) of the render(s), the exemplars (at least 2) and
    random images, per layer, and the unit's largest activation over the exemplars (see the module docstring).

    The test is a permutation test over the render (its correlations averaged over its images) and the ``n``
    exemplars: each of the ``n + 1`` is compared with the other ``n`` the same way, so for an image exchangeable
    with the exemplars every rank is equally likely and the false-alarm rate is exactly as stated."""
    layers = [ref for ref in render if ref in exemplars and ref in randoms]
    rows: list[tuple[float, float, float]] = []
    items: list[torch.Tensor] = []  # per layer: each item's closeness to the others (the render first)
    for ref in layers:
        ex = exemplars[ref]
        n = ex.shape[0]
        within, against = spearman(ex, ex), spearman(randoms[ref], ex)
        upper = float((within.sum() - within.diagonal().sum()) / max(n * (n - 1), 1))
        to_render = spearman(render[ref], ex).mean(dim=0)  # (n,)
        rows.append((float(to_render.mean()), upper, float(against.mean())))
        if n >= 2:
            group = torch.eye(n + 1, dtype=torch.float64)
            group[0, 1:] = group[1:, 0] = to_render.double()
            group[1:, 1:] = within.double()
            random_render = spearman(randoms[ref], render[ref]).mean(dim=1, keepdim=True)  # (R, 1)
            items.append(_closeness(group, torch.cat([random_render, against], dim=1)))
    share = sum(r > low for r, _, low in rows) / len(rows) if rows else 0.0
    closeness = p_value = false_alarm = None
    null: tuple[float, ...] = ()
    if items:
        scores = torch.stack(items).mean(dim=0)  # (n + 1,): each item's closeness, averaged over the layers
        closeness, null = float(scores[0]), tuple(float(v) for v in scores[1:])
        p_value = (1 + sum(v <= closeness for v in null)) / (1 + len(null))
        false_alarm = int(alpha * (len(null) + 1) + 1e-9) / (len(null) + 1)
    flags = (["another-path"] if p_value is not None and p_value <= alpha else []) + \
        (["silent"] if not exemplar_max > SILENT_BELOW else [])
    return PathSimilarity(tuple(str(ref) for ref in layers), tuple(r for r, _, _ in rows),
                          tuple(u for _, u, _ in rows), tuple(low for _, _, low in rows), share, float(exemplar_max),
                          tuple(flags), closeness, null, p_value, false_alarm)
