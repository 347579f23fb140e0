"""Laying a layer's activation samples out in 2-D and binning them into a grid (the activation atlas's map).

* :func:`lay_out`: UMAP on the cosine geometry (torchdr's UMAP on the unit-normalized vectors, whose squared
  Euclidean distance is ``2 - 2 cos``), seeded; or scikit-learn's t-SNE with the cosine metric. torchdr was
  measured against umap-learn on 10,000 vectors of 320 dimensions on 2 cores (benchmarks/RESULTS.md,
  "Activation atlas"): the same trustworthiness (0.991 at k = 10), half the time (25 s against 48 s), and it
  needs only torch and scikit-learn, where umap-learn brings numba and llvmlite (210 MB).
* :func:`normalize_layout`: Lucid's: clip each axis to its 1st-99th percentiles widened by a tenth, scale to
  [0, 1].
* :func:`bin_cells`: an N x N grid over the unit square; a cell keeps its members when it has more than
  ``min_count`` of them (Lucid's threshold), with their mean vector.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidOptionError

__all__ = ["LAYOUTS", "N_NEIGHBORS", "MIN_DIST", "GRID", "MIN_COUNT", "lay_out", "normalize_layout", "bin_cells",
           "GridCell"]

LAYOUTS = ("umap", "tsne")
N_NEIGHBORS = 50
"""UMAP's neighbourhood size, Lucid's activation-atlas default (``aligned_umap``)."""
MIN_DIST = 0.05
"""UMAP's minimum distance, Lucid's default."""
GRID = 20
MIN_COUNT = 5
"""A cell with this many samples or fewer is dropped (Lucid's ``bin_laid_out_activations`` threshold)."""


def _unit(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def lay_out(vectors: np.ndarray, *, method: str = "umap", n_neighbors: int = N_NEIGHBORS, min_dist: float = MIN_DIST,
            seed: int = 0) -> np.ndarray:
    """``(N, 2)`` coordinates of the ``(N, C)`` ``vectors`` by cosine similarity (reproducible with ``seed``)."""
    if method not in LAYOUTS:
        raise InvalidOptionError(f"Unknown layout {method!r}: use {', '.join(LAYOUTS)}")
    n = len(vectors)
    if n < 4:
        raise InvalidOptionError(f"A layout needs at least 4 samples, not {n}")
    x = _unit(vectors)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (n - 1) // 3)))
        return np.asarray(TSNE(metric="cosine", init="pca", random_state=seed, perplexity=perplexity)
                          .fit_transform(x), dtype=np.float32)
    with warnings.catch_warnings():  # torchdr says at import that FAISS is missing: it is not used (backend=None)
        warnings.simplefilter("ignore", ImportWarning)
        import torchdr

    torch.manual_seed(seed)
    # torchdr wants fewer neighbours than n - 1
    umap = torchdr.UMAP(n_neighbors=min(n_neighbors, n - 2), min_dist=min_dist, backend=None, device="cpu",
                        random_state=seed, verbose=False)
    with contextlib.redirect_stdout(io.StringIO()):
        out = umap.fit_transform(torch.from_numpy(x))
    return np.asarray(out.detach().cpu().numpy(), dtype=np.float32)


def normalize_layout(layout: np.ndarray, low: float = 1.0, high: float = 99.0, margin: float = 0.1) -> np.ndarray:
    """``layout`` clipped to its ``low``-``high`` percentiles (widened by ``margin`` of their span) and scaled
    to [0, 1] along each axis."""
    lows, highs = np.percentile(layout, low, axis=0), np.percentile(layout, high, axis=0)
    span = highs - lows
    lows, highs = lows - margin * span, highs + margin * span
    clipped = np.clip(layout, lows, highs) - lows
    return (clipped / np.maximum(highs - lows, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class GridCell:
    """A kept cell: ``row`` (from the top: y), ``col`` (x), its members (indices of the samples), their mean."""

    row: int
    col: int
    members: np.ndarray
    mean: np.ndarray

    @property
    def count(self) -> int:
        return len(self.members)


def bin_cells(coords: np.ndarray, vectors: np.ndarray, grid: int = GRID, min_count: int = MIN_COUNT,
              chunk: int = 4096) -> tuple[np.ndarray, list[GridCell]]:
    """Each sample's cell (``row * grid + col``, or -1 where its cell was dropped) and the kept cells, row by
    row. ``coords`` are normalized (in [0, 1]); the mean vectors are summed ``chunk`` samples at a time, so a
    memory-mapped ``vectors`` is never loaded whole."""
    if grid < 1:
        raise InvalidOptionError(f"The grid needs at least 1 cell a side, not {grid}")
    cols = np.clip((coords[:, 0] * grid).astype(np.int64), 0, grid - 1)
    rows = np.clip((coords[:, 1] * grid).astype(np.int64), 0, grid - 1)
    cell = rows * grid + cols
    counts = np.bincount(cell, minlength=grid * grid)
    kept = counts > min_count
    sums = np.zeros((grid * grid, vectors.shape[1]))
    for start in range(0, len(cell), chunk):
        np.add.at(sums, cell[start:start + chunk], np.asarray(vectors[start:start + chunk], dtype=np.float64))
    assignment = np.where(kept[cell], cell, -1)
    order = np.argsort(cell, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    cells = [GridCell(int(k // grid), int(k % grid), np.sort(order[bounds[k]:bounds[k + 1]]),
                      (sums[k] / counts[k]).astype(np.float32)) for k in np.flatnonzero(kept)]
    return assignment, cells
