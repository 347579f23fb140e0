"""Dataset exemplars and activation statistics of every unit of a layer, in one streaming pass.

A :class:`UnitTracker` takes the activations ``(B, C, ...)`` of a batch of images and keeps, for each
of the C units, with memory that does not grow with the dataset:

* the top N images by the unit's spatial **maximum**, with the position of that maximum;
* the top N images by the spatial **mean**;
* the bottom N images by the spatial **minimum** (the most negative), with its position;
* running sums for the mean and standard deviation over all positions of all images, the largest and
  smallest value, and how many images drive the unit above 0 anywhere.

Ranking is exact and independent of batching or of how the dataset is split: candidates are ordered by
value, ties by the smaller image index, so merging the trackers of several shards (:meth:`merge`) gives
the single-pass result. Images whose activations are NaN or infinite for a unit are left out of that
unit's rankings and statistics.

The per-image spatial means and maxima (an images x units matrix each) are returned by :meth:`update`
for the caller to keep on disk; histograms (:func:`histograms`) are made from the maxima at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["UnitTracker", "BatchSummary", "summarize", "histograms", "cofiring", "HISTOGRAM_BINS", "COFIRING_K"]

HISTOGRAM_BINS = 32
COFIRING_K = 16


@dataclass(frozen=True)
class BatchSummary:
    """Per image and unit of one batch: spatial mean, maximum (and its flat position), minimum (and its)."""

    means: torch.Tensor
    maxima: torch.Tensor
    argmax: torch.Tensor
    minima: torch.Tensor
    argmin: torch.Tensor
    sums: torch.Tensor      # float64 sum over positions
    squares: torch.Tensor   # float64 sum of squares over positions
    positions: int


def summarize(act: torch.Tensor) -> BatchSummary:
    """:class:`BatchSummary` of activations ``(B, C, ...)`` (any number of spatial dimensions, or none)."""
    flat = act.reshape(act.shape[0], act.shape[1], -1).float()
    maxima, argmax = flat.max(dim=2)
    minima, argmin = flat.min(dim=2)
    wide = flat.double()
    return BatchSummary(flat.mean(dim=2), maxima, argmax, minima, argmin, wide.sum(dim=2), (wide * wide).sum(dim=2),
                        flat.shape[2])


def _ranked(values: torch.Tensor, images: torch.Tensor, positions: torch.Tensor, n: int,
            descending: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``n`` candidates of each row (``(C, M)`` each) by value, ties by the smaller image index."""
    order = images.argsort(dim=1, stable=True)
    values, images, positions = values.gather(1, order), images.gather(1, order), positions.gather(1, order)
    order = values.argsort(dim=1, descending=descending, stable=True)[:, :n]
    return values.gather(1, order), images.gather(1, order), positions.gather(1, order)


class UnitTracker:
    """Exemplars and statistics of ``channels`` units (see the module docstring).

    Args:
        channels: How many units the layer has.
        n: How many exemplars to keep per unit and kind.
    """

    KINDS = ("max", "mean", "min")

    def __init__(self, channels: int, n: int) -> None:
        self.channels, self.n = channels, n
        empty_i = torch.full((channels, 0), -1, dtype=torch.int64)
        empty_v = torch.zeros((channels, 0))
        self.top = dict.fromkeys(self.KINDS, (empty_v, empty_i, empty_i))  # values, images, positions
        self.sum = torch.zeros(channels, dtype=torch.float64)
        self.squares = torch.zeros(channels, dtype=torch.float64)
        self.count = torch.zeros(channels, dtype=torch.int64)    # positions counted
        self.images = torch.zeros(channels, dtype=torch.int64)   # images counted
        self.positive = torch.zeros(channels, dtype=torch.int64)  # images with a maximum above 0
        self.maximum = torch.full((channels,), -torch.inf)
        self.minimum = torch.full((channels,), torch.inf)

    def update(self, act: torch.Tensor, indices: torch.Tensor) -> BatchSummary:
        """Add a batch: activations ``(B, C, ...)`` of the images with dataset indices ``(B,)``."""
        s = summarize(act)
        valid = torch.isfinite(s.means) & torch.isfinite(s.maxima) & torch.isfinite(s.minima)  # (B, C)
        images = indices.to(torch.int64)[:, None].expand(-1, self.channels)
        candidates = {"max": (s.maxima, s.argmax, True), "mean": (s.means, s.argmax, True),
                      "min": (s.minima, s.argmin, False)}
        for kind, (values, positions, descending) in candidates.items():
            filler = -torch.inf if descending else torch.inf
            values = torch.where(valid, values, torch.full_like(values, filler))
            kept = torch.where(valid, images, torch.full_like(images, -1))
            self._add(kind, values.t(), kept.t(), positions.t(), descending)
        zero = torch.zeros((), dtype=torch.float64)
        self.sum += torch.where(valid, s.sums, zero).sum(dim=0)
        self.squares += torch.where(valid, s.squares, zero).sum(dim=0)
        self.count += valid.sum(dim=0) * s.positions
        self.images += valid.sum(dim=0)
        self.positive += (valid & (s.maxima > 0)).sum(dim=0)
        self.maximum = torch.maximum(self.maximum, torch.where(valid, s.maxima, -torch.inf).amax(dim=0))
        self.minimum = torch.minimum(self.minimum, torch.where(valid, s.minima, torch.inf).amin(dim=0))
        return s

    def _add(self, kind: str, values: torch.Tensor, images: torch.Tensor, positions: torch.Tensor,
             descending: bool) -> None:
        old_v, old_i, old_p = self.top[kind]
        self.top[kind] = _ranked(torch.cat([old_v, values], dim=1), torch.cat([old_i, images], dim=1),
                                 torch.cat([old_p, positions], dim=1), self.n, descending)

    def merge(self, other: UnitTracker) -> UnitTracker:
        """Add another tracker's images (a shard of the same dataset with its own image indices)."""
        for kind in self.KINDS:
            self._add(kind, *other.top[kind], descending=kind != "min")
        self.sum += other.sum
        self.squares += other.squares
        self.count += other.count
        self.images += other.images
        self.positive += other.positive
        self.maximum = torch.maximum(self.maximum, other.maximum)
        self.minimum = torch.minimum(self.minimum, other.minimum)
        return self

    def exemplars(self, unit: int, kind: str) -> list[tuple[int, float, int]]:
        """``(image index, value, flat position)`` of a unit's exemplars of one kind, best first; the bottom
        kind (``min``) only holds images where the unit goes below 0."""
        values, images, positions = (t[unit] for t in self.top[kind])
        out = []
        for value, image, position in zip(values.tolist(), images.tolist(), positions.tolist()):
            if image < 0 or not np.isfinite(value) or (kind == "min" and value >= 0):
                continue
            out.append((int(image), float(value), int(position)))
        return out

    def statistics(self, unit: int) -> dict[str, float | int]:
        """Mean and standard deviation over all positions of all images, maximum, minimum, the fraction of
        images where the unit is above 0 somewhere, and how many images were counted."""
        count = int(self.count[unit])
        images = int(self.images[unit])
        if count == 0:
            nan = float("nan")
            return {"mean": nan, "std": nan, "max": nan, "min": nan, "fraction_positive": nan, "images": 0}
        mean = float(self.sum[unit]) / count
        variance = max(float(self.squares[unit]) / count - mean * mean, 0.0)
        return {"mean": mean, "std": variance ** 0.5, "max": float(self.maximum[unit]),
                "min": float(self.minimum[unit]), "fraction_positive": int(self.positive[unit]) / images,
                "images": images}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything the tracker holds, as tensors (a checkpoint; see :meth:`from_state_dict`)."""
        state = {"sum": self.sum, "squares": self.squares, "count": self.count, "images": self.images,
                 "positive": self.positive, "maximum": self.maximum, "minimum": self.minimum,
                 "n": torch.tensor(self.n)}
        for kind, (values, images, positions) in self.top.items():
            state.update({f"{kind}.values": values, f"{kind}.images": images, f"{kind}.positions": positions})
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> UnitTracker:
        tracker = cls(int(state["sum"].shape[0]), int(state["n"]))
        for name in ("sum", "squares", "count", "images", "positive", "maximum", "minimum"):
            setattr(tracker, name, state[name].clone())
        for kind in cls.KINDS:
            tracker.top[kind] = tuple(state[f"{kind}.{part}"].clone()  # type: ignore[assignment]
                                      for part in ("values", "images", "positions"))
        return tracker


def histograms(maxima: np.ndarray, bins: int = HISTOGRAM_BINS, chunk: int = 256) -> list[dict[str, list[Any]]]:
    """For each unit (column of the images x units ``maxima``), a histogram of its per-image maxima over
    their own range: ``{"edges": [bins + 1 floats], "counts": [bins ints]}``. Columns are read ``chunk``
    at a time, so a memory-mapped matrix is never loaded whole. Non-finite values are left out."""
    out: list[dict[str, list[Any]]] = []
    for start in range(0, maxima.shape[1], chunk):
        block = np.asarray(maxima[:, start:start + chunk], dtype=np.float64)
        for column in block.T:
            values = column[np.isfinite(column)]
            if values.size == 0:
                out.append({"edges": [], "counts": []})
                continue
            low, high = float(values.min()), float(values.max())
            if high <= low:
                high = low + 1e-6
            counts, edges = np.histogram(values, bins=bins, range=(low, high))
            out.append({"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]})
    return out


def cofiring(means: np.ndarray, k: int = COFIRING_K, chunk: int = 1024) -> list[list[tuple[int, float]]]:
    """For each unit (column of the images x units ``means``), the ``k`` other units whose per-image mean
    activations correlate most with it (Pearson, over the images whose row is finite), strongest first.

    The correlation matrix is accumulated ``chunk`` rows at a time (``C x C`` memory, not ``N x C``)."""
    channels = means.shape[1]
    total = np.zeros(channels)
    count = 0
    for start in range(0, means.shape[0], chunk):
        block = np.asarray(means[start:start + chunk], dtype=np.float64)
        block = block[np.isfinite(block).all(axis=1)]
        total += block.sum(axis=0)
        count += block.shape[0]
    if count < 2:
        return [[] for _ in range(channels)]
    centre = total / count
    product = np.zeros((channels, channels))
    for start in range(0, means.shape[0], chunk):
        block = np.asarray(means[start:start + chunk], dtype=np.float64)
        block = block[np.isfinite(block).all(axis=1)] - centre
        product += block.T @ block
    norms = np.sqrt(np.diag(product))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = product / np.outer(norms, norms)
    corr[~np.isfinite(corr)] = -np.inf
    np.fill_diagonal(corr, -np.inf)
    out = []
    for row in corr:
        order = np.argsort(-row, kind="stable")[:k]
        out.append([(int(u), float(row[u])) for u in order if np.isfinite(row[u])])
    return out
