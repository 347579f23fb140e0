"""Concept labels for images: which concepts each image shows, from the best source at hand, lifted up WordNet.

Sources, in order of trust (the matrix names the one used):

- ``wordnet ids``: the user's own labels, a WordNet id in each file name or its folder's name (``n01443537_...``,
  as in ImageNet and ``imagenet-sample``);
- ``predictions``: else the independent network's top-1 class of each image (:mod:`filterscope.trust`).

Each image's concept and every ancestor up the shipped WordNet hierarchy of the ImageNet classes
(``zoo/imagenet_hierarchy.tsv``) below the generic top levels become its concepts: a photo of a Norwich terrier
shows "Norwich terrier", "terrier", "hunting dog", "dog", ... Concepts present in every image are dropped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InvalidOptionError
from ..trust.describe import GENERIC_DEPTH, hierarchy

__all__ = ["ConceptMatrix", "from_wordnet_ids", "wordnet_id", "SOURCES"]

SOURCES = ("wordnet ids", "predictions")
_WNID = re.compile(r"n\d{8}")


@dataclass(frozen=True)
class ConceptMatrix:
    """``present`` ``(N, K)`` bool: image ``i`` shows concept ``k`` (named ``names[k]``, WordNet id ``wnids[k]``,
    ``depth[k]`` steps below the root), from ``source``."""

    names: tuple[str, ...]
    wnids: tuple[str, ...]
    depth: tuple[int, ...]
    present: torch.Tensor
    source: str

    @property
    def images(self) -> int:
        return int(self.present.shape[0])

    def ancestors(self, wnid: str, levels: int) -> set[str]:
        """``wnid`` and its ancestors up to ``levels`` steps (WordNet ids)."""
        _, nodes = hierarchy()
        found, current = {wnid}, nodes.get(wnid)
        for _ in range(levels):
            if current is None or not current.parent:
                break
            found.add(current.parent)
            current = nodes.get(current.parent)
        return found


def wordnet_id(path: str | os.PathLike[str]) -> str | None:
    """The WordNet id in a file's name, else in its folder's name (``None`` without one)."""
    p = Path(path)
    for part in (p.name, p.parent.name):
        found = _WNID.search(part)
        if found:
            return found.group(0)
    return None


def from_wordnet_ids(wnids: Sequence[str | None], source: str = "wordnet ids") -> ConceptMatrix:
    """The matrix of images whose own concept is each of ``wnids`` (``None``: no concept), lifted up the hierarchy.

    Raises:
        InvalidOptionError: no image has a concept the hierarchy knows.
    """
    _, nodes = hierarchy()
    columns: dict[str, int] = {}
    rows: list[list[int]] = []
    for wnid in wnids:
        row = []
        current = nodes.get(wnid) if wnid else None
        while current is not None and current.depth > GENERIC_DEPTH:
            row.append(columns.setdefault(current.wnid, len(columns)))
            current = nodes.get(current.parent)
        rows.append(row)
    if not columns:
        raise InvalidOptionError("No image has a WordNet concept the ImageNet hierarchy knows: name files or folders "
                                 "with WordNet ids (n01443537_goldfish.jpg), or let the independent network label them")
    present = torch.zeros(len(rows), len(columns), dtype=torch.bool)
    for i, row in enumerate(rows):
        present[i, row] = True
    keep = present.sum(0) < len(rows)  # a concept every image shows tells nothing apart
    order = [w for w, _ in sorted(columns.items(), key=lambda item: item[1])]
    kept = [w for w, k in zip(order, keep.tolist()) if k]
    return ConceptMatrix(tuple(nodes[w].name for w in kept), tuple(kept), tuple(nodes[w].depth for w in kept),
                         present[:, keep], source)
