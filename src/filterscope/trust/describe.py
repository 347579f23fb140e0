"""What is this unit? Offline descriptions from its exemplars: a class consensus, colours, how spread it is.

- **Exemplar consensus**: the independent network's (:mod:`.independent`) top-1 classes for the unit's top
  exemplar crops, counted up the WordNet noun hierarchy of the ImageNet classes (a table derived once from
  WordNet 3.0 and shipped: ``zoo/imagenet_hierarchy.tsv``, made by ``tools/imagenet_hierarchy.py``). The headline
  is the most specific group that holds a majority of the crops, then the most specific group that holds at
  least half of those: "dog (31 of 50), mostly terriers (20)". When no specific group holds half, the unit reads
  as mixed, with its most common classes.
- **Colours**: the dominant hues of the exemplar crops (pixels with some saturation and light, by twelve named
  hues; gray, black and white for the others), with their shares: what early units are about.
- **Spread**: the share of the unit's map, over its top exemplars, at more than half of that image's maximum:
  a localized detector (a few %) or a texture all over the image (most of it).
- **Class effect**: the classes the unit promotes and suppresses through the linearized path to the logits
  (:func:`filterscope.circuits.class_effects`), for units near a classifier.

Hand-written: the hierarchy walk is a dictionary lookup; the colour names are a hue table.
"""

from __future__ import annotations

import colorsys
import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch

__all__ = ["Consensus", "Description", "hierarchy", "consensus", "colours", "spread", "GENERIC_DEPTH"]

GENERIC_DEPTH = 5
"""Groups this close to WordNet's root (entity, physical entity, object, whole, artifact or living thing, ...) say
nothing specific: a headline needs a group deeper than this."""

_HUES = ("red", "orange", "yellow", "lime", "green", "teal", "cyan", "azure", "blue", "violet", "magenta", "pink")


@dataclass(frozen=True)
class Node:
    """A WordNet synset on some ImageNet class's path to the root."""

    wnid: str
    parent: str
    name: str
    depth: int


@functools.cache
def hierarchy() -> tuple[tuple[Node, ...], dict[str, Node]]:
    """The 1,000 classes' nodes (index = class id) and every node by WordNet id."""
    text = resources.files("filterscope.zoo").joinpath("imagenet_hierarchy.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line]
    parents = {wnid: parent for wnid, parent, _ in rows}

    def depth(wnid: str) -> int:
        steps = 0
        while parents.get(wnid):
            wnid, steps = parents[wnid], steps + 1
        return steps

    nodes = {wnid: Node(wnid, parent, name, depth(wnid)) for wnid, parent, name in rows}
    return tuple(nodes[row[0]] for row in rows[:1000]), nodes


def _path(node: Node) -> list[Node]:
    """A node and its ancestors, most specific first."""
    _, nodes = hierarchy()
    current: Node | None = node
    out = []
    while current is not None:
        out.append(current)
        current = nodes.get(current.parent)
    return out


def _plural(name: str) -> str:
    if name.endswith(("s", "x", "ch", "sh")):
        return name + "es"
    if name.endswith("y") and name[-2:-1] not in "aeiou":
        return name[:-1] + "ies"
    return name + "s"


@dataclass(frozen=True)
class Consensus:
    """The independent network's classes for a unit's exemplar crops, up the hierarchy.

    Attributes:
        text: In words: ``dog (31 of 50), mostly terriers (20)``, or ``mixed: ...``.
        group, count: The headline group and how many crops it holds (``None``, 0 when mixed).
        subgroup, subcount: The most specific group holding half of the headline's crops (or ``None``).
        total: How many crops were classified.
        classes: The most common predicted classes, ``(name, count)``.
    """

    text: str
    group: str | None
    count: int
    subgroup: str | None
    subcount: int
    total: int
    classes: tuple[tuple[str, int], ...]

    def to_dict(self) -> dict[str, object]:
        return {"text": self.text, "group": self.group, "count": self.count, "subgroup": self.subgroup,
                "subcount": self.subcount, "total": self.total, "classes": [list(c) for c in self.classes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Consensus:
        classes = tuple((str(n), int(c)) for n, c in data["classes"])
        return cls(str(data["text"]), data["group"] and str(data["group"]), int(data["count"]),
                   data["subgroup"] and str(data["subgroup"]), int(data["subcount"]),
                   int(data["total"]), classes)


def consensus(predicted: Sequence[int]) -> Consensus:
    """The consensus of ImageNet class ids ``predicted`` (one per exemplar crop)."""
    classes, nodes = hierarchy()
    total = len(predicted)
    common = tuple((classes[c].name, n) for c, n in Counter(int(c) for c in predicted).most_common(3))
    counts: Counter[str] = Counter()
    for c in predicted:
        counts.update(node.wnid for node in _path(classes[int(c)]))

    def deepest(members: Counter[str], within: int, below: Node | None) -> Node | None:
        # the headline needs a majority; a subgroup, half of the headline's crops
        found = [nodes[w] for w, n in members.items() if (2 * n > within if below is None else 2 * n >= within)
                 and nodes[w].depth > GENERIC_DEPTH
                 and (below is None or (nodes[w].depth > below.depth and below in _path(nodes[w])))]
        return max(found, key=lambda node: (node.depth, members[node.wnid]), default=None)

    head = deepest(counts, total, None) if total else None
    if head is None:
        listed = ", ".join(f"{name} ({n})" for name, n in common) or "nothing"
        return Consensus(f"mixed: {listed} of {total}", None, 0, None, 0, total, common)
    sub = deepest(counts, counts[head.wnid], head)
    text = f"{head.name} ({counts[head.wnid]} of {total})"
    if sub is not None and counts[sub.wnid] < counts[head.wnid]:
        text += f", mostly {_plural(sub.name)} ({counts[sub.wnid]})"
    else:
        sub = None
    return Consensus(text, head.name, counts[head.wnid], sub.name if sub else None, counts[sub.wnid] if sub else 0,
                     total, common)


def colours(crops: Sequence[torch.Tensor], top: int = 3) -> tuple[tuple[str, float], ...]:
    """The ``top`` colour names of RGB ``crops`` (each ``(3,H,W)`` in [0, 1]) by their share of pixels: twelve hues
    for pixels with saturation and value above 0.25, else black (value below 0.25), white (above 0.8) or gray."""
    counts: Counter[str] = Counter()
    total = 0
    for crop in crops:
        if crop.shape[0] != 3:
            continue
        small = torch.nn.functional.interpolate(crop[None].float(), size=(24, 24), mode="area")[0]
        for r, g, b in small.reshape(3, -1).T.tolist():
            h, s, v = colorsys.rgb_to_hsv(r, g, b)
            if v < 0.25:
                name = "black"
            elif s < 0.25:
                name = "white" if v > 0.8 else "gray"
            else:
                name = _HUES[int((h * 12 + 0.5) % 12)]
            counts[name] += 1
            total += 1
    return tuple((name, n / total) for name, n in counts.most_common(top)) if total else ()


def spread(maps: Sequence[torch.Tensor]) -> float:
    """The mean share of positions of each ``(H, W)`` map above half its maximum (maps whose maximum is not
    positive count 0)."""
    shares = []
    for m in maps:
        peak = float(m.max())
        shares.append(float((m > peak / 2).float().mean()) if peak > 0 else 0.0)
    return sum(shares) / len(shares) if shares else 0.0


@dataclass(frozen=True)
class Description:
    """What a unit is, in words and numbers (see the module docstring)."""

    consensus: Consensus | None
    colours: tuple[tuple[str, float], ...]
    spread: float
    promotes: tuple[tuple[str, float], ...] = field(default=())
    suppresses: tuple[tuple[str, float], ...] = field(default=())

    @property
    def text(self) -> str:
        """One line: the consensus, the colours, the spread, and the classes promoted."""
        parts = [self.consensus.text] if self.consensus is not None else []
        if self.colours:
            parts.append(", ".join(f"{name} {share:.0%}" for name, share in self.colours[:2]))
        parts.append(f"{'localized' if self.spread < 0.15 else 'spread'} ({self.spread:.0%} of the map)")
        if self.promotes:
            parts.append("promotes " + ", ".join(name for name, _ in self.promotes[:3]))
        return "; ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {"text": self.text, "consensus": self.consensus.to_dict() if self.consensus else None,
                "colours": [list(c) for c in self.colours], "spread": self.spread,
                "promotes": [list(c) for c in self.promotes], "suppresses": [list(c) for c in self.suppresses]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Description:
        def pairs(key: str) -> tuple[tuple[str, float], ...]:
            return tuple((str(n), float(v)) for n, v in data.get(key) or ())

        found = data.get("consensus")
        return cls(Consensus.from_dict(found) if isinstance(found, Mapping) else None, pairs("colours"),
                   float(data["spread"]), pairs("promotes"), pairs("suppresses"))
