"""Unit matching between two layers (convergent learning, Li et al. 2015; "best buddies" after Dravid et al. 2023).

Two layers' activations over the same images, their grids pooled to the same size where they differ, give each pair
of units a Pearson correlation over images and positions. From that matrix:

- the **one-to-one matching** maximizing the summed correlation (the Hungarian algorithm, scipy's
  ``linear_sum_assignment``);
- the **best buddies**: pairs that are each other's best match;
- a **threshold** from a null: the same correlations with one layer's images shuffled (a derangement, positions
  kept: what a unit shares with any unit by where it fires in an image and not what it sees), the
  ``NULL_QUANTILE`` quantile of each unit's best null correlation; a match above it is a match, and the share of
  matched units is a summary that no reordering of the units changes.

Hand-written: the correlations are one matrix product; the assignment is scipy's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["Match", "LayerMatch", "unit_correlations", "match_units", "align_grids", "NULL_QUANTILE", "MAX_GRID"]

NULL_QUANTILE = 0.99
"""The quantile of the shuffled-image null's best correlations above which a match counts."""
MAX_GRID = 14
"""Grids are pooled to at most this side before correlating (an early layer's 112 x 112 adds nothing but time)."""


@dataclass(frozen=True)
class Match:
    """Unit ``a`` of layer A matched to unit ``b`` of layer B with ``correlation``; ``buddies``: each is the other's
    best match."""

    a: int
    b: int
    correlation: float
    buddies: bool

    def to_dict(self) -> dict[str, object]:
        return {"a": self.a, "b": self.b, "correlation": self.correlation, "buddies": self.buddies}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Match:
        return cls(int(data["a"]), int(data["b"]), float(data["correlation"]), bool(data["buddies"]))


@dataclass(frozen=True)
class LayerMatch:
    """The matching of ``layer_a`` of A with ``layer_b`` of B (see the module docstring).

    Attributes:
        matches: The one-to-one matching, best correlation first (``min(units_a, units_b)`` pairs).
        threshold: The null's quantile: a match above it counts as matched.
        units_a, units_b: The layers' unit counts.
        grid: The side the grids were pooled to.
    """

    layer_a: str
    layer_b: str
    matches: tuple[Match, ...]
    threshold: float
    units_a: int
    units_b: int
    grid: int

    @property
    def matched(self) -> tuple[Match, ...]:
        """The matches above the threshold."""
        return tuple(m for m in self.matches if m.correlation > self.threshold)

    @property
    def share(self) -> float:
        """The share of A's units with a match above the threshold."""
        return len(self.matched) / self.units_a if self.units_a else 0.0

    @property
    def buddies(self) -> tuple[Match, ...]:
        return tuple(m for m in self.matches if m.buddies)

    def unmatched(self, side: str = "a") -> list[int]:
        """The units of A (``side`` "a") or B ("b") with no match above the threshold, in order."""
        taken = {m.a if side == "a" else m.b for m in self.matched}
        return [u for u in range(self.units_a if side == "a" else self.units_b) if u not in taken]

    def of(self, unit: int) -> Match | None:
        """Unit ``unit`` of A's match."""
        return next((m for m in self.matches if m.a == unit), None)

    def to_dict(self) -> dict[str, object]:
        return {"layer_a": self.layer_a, "layer_b": self.layer_b, "matches": [m.to_dict() for m in self.matches],
                "threshold": self.threshold, "units_a": self.units_a, "units_b": self.units_b, "grid": self.grid,
                "share": self.share}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerMatch:
        return cls(str(data["layer_a"]), str(data["layer_b"]), tuple(Match.from_dict(m) for m in data["matches"]),
                   float(data["threshold"]), int(data["units_a"]), int(data["units_b"]), int(data["grid"]))


def align_grids(a: torch.Tensor, b: torch.Tensor, limit: int = MAX_GRID) -> tuple[torch.Tensor, torch.Tensor]:
    """Two layers' activations ``(N, C, H, W)`` pooled (adaptive average) to the same side: the smaller of their
    grids, at most ``limit``. Vectors ``(N, C)`` are left as they are (and a grid is averaged to meet one)."""
    if a.dim() == 2 or b.dim() == 2:
        return (a if a.dim() == 2 else a.float().mean(dim=(2, 3))), (b if b.dim() == 2 else b.float().mean(dim=(2, 3)))
    side = min(a.shape[-2], a.shape[-1], b.shape[-2], b.shape[-1], limit)
    pool = torch.nn.functional.adaptive_avg_pool2d
    return pool(a.float(), side), pool(b.float(), side)


def _samples(x: torch.Tensor) -> torch.Tensor:
    """``(samples, C)`` standardized: every image and position a sample (a constant unit stays 0)."""
    flat = x.double().movedim(1, -1).reshape(-1, x.shape[1])
    flat = flat - flat.mean(dim=0)
    return flat / flat.norm(dim=0).clamp(min=1e-12)


def unit_correlations(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(C_a, C_b)``: the Pearson correlation of every unit of ``a`` with every unit of ``b`` over images and
    positions (both ``(N, C, h, w)`` on the same grid, or ``(N, C)``)."""
    return _samples(a).T @ _samples(b)


def _derangement(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of ``range(n)`` that moves every index (``n`` at least 2)."""
    order = torch.randperm(n, generator=generator)
    moved = torch.empty_like(order)
    moved[order] = order.roll(-1)  # a cycle through every index in a random order
    return moved


@torch.no_grad()
def match_units(a: torch.Tensor, b: torch.Tensor, *, layer_a: str = "A", layer_b: str = "B", shuffles: int = 3,
                quantile: float = NULL_QUANTILE, seed: int = 0) -> LayerMatch:
    """The matching of two layers' activations over the same images (``(N, C_a, H, W)`` and ``(N, C_b, H', W')``,
    see the module docstring), its threshold from ``shuffles`` shuffled-image nulls.

    Raises:
        ValueError: the two do not hold the same number of images, or fewer than 2.
    """
    if a.shape[0] != b.shape[0] or a.shape[0] < 2:
        raise ValueError(f"Matching needs the same images (at least 2) in both layers; got {a.shape[0]} and "
                         f"{b.shape[0]}")
    a, b = align_grids(a, b)
    correlation = unit_correlations(a, b)
    rows, cols = linear_sum_assignment(correlation.numpy(), maximize=True)
    best_b, best_a = correlation.argmax(dim=1), correlation.argmax(dim=0)
    matches = sorted((Match(i, j, float(correlation[i, j]), int(best_b[i]) == j and int(best_a[j]) == i)
                      for i, j in zip(rows.tolist(), cols.tolist())), key=lambda m: -m.correlation)
    generator = torch.Generator().manual_seed(seed)
    null = torch.cat([unit_correlations(a, b[_derangement(b.shape[0], generator)]).amax(dim=1)
                      for _ in range(shuffles)])
    threshold = float(torch.quantile(null, quantile))
    return LayerMatch(layer_a, layer_b, tuple(matches), threshold, a.shape[1], b.shape[1],
                      int(a.shape[-1]) if a.dim() == 4 else 1)
