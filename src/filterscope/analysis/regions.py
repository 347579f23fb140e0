"""Occlusion regions: boxes in original-image pixels (or percent), from the command line or a file."""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import RegionError

__all__ = ["Box", "parse_region", "read_regions"]

_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class Box:
    """A rectangle ``x0, y0, x1, y1`` in original-image pixels, or in percent of the size when ``relative``."""

    x0: float
    y0: float
    x1: float
    y1: float
    relative: bool = False

    @classmethod
    def parse(cls, text: str) -> Box:
        parts = text.split(",")
        if len(parts) != 4:
            raise RegionError(f"Bad box {text!r}: expected x0,y0,x1,y1 (pixels, or percentages like 10%,20%,60%,80%)")
        matches = [m for m in map(_NUMBER.match, parts) if m is not None]
        if len(matches) != 4:
            raise RegionError(f"Bad box {text!r}: coordinates must be numbers, optionally with a % suffix")
        percent = {m.group(2) for m in matches}
        if len(percent) != 1:
            raise RegionError(f"Bad box {text!r}: use pixels or percentages for all four coordinates, not both")
        x0, y0, x1, y1 = (float(m.group(1)) for m in matches)
        return cls(x0, y0, x1, y1, relative=percent == {"%"})

    def pixels(self, size: tuple[int, int], name: str = "region") -> tuple[float, float, float, float]:
        """The box in pixels of an image of ``size`` (width, height), checked to lie inside it."""
        w, h = size
        x0, y0, x1, y1 = self.x0, self.y0, self.x1, self.y1
        if self.relative:
            x0, x1, y0, y1 = x0 * w / 100, x1 * w / 100, y0 * h / 100, y1 * h / 100
        if x1 <= x0 or y1 <= y0:
            raise RegionError(f"Region {name!r} has zero area ({self}): x1 must exceed x0 and y1 exceed y0")
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise RegionError(f"Region {name!r} ({self}) is outside the {w}x{h} image")
        return x0, y0, x1, y1

    def __str__(self) -> str:
        unit = "%" if self.relative else ""
        return ",".join(f"{v:g}{unit}" for v in (self.x0, self.y0, self.x1, self.y1))


def parse_region(spec: str) -> tuple[str, list[Box]]:
    """``"face=10,20,110,90"``; several boxes joined with ``+`` form one variant."""
    name, sep, boxes = spec.partition("=")
    name = name.strip()
    if not sep or not name or not boxes.strip():
        raise RegionError(f"Bad region {spec!r}: expected NAME=x0,y0,x1,y1 (boxes joined with +)")
    return name, [Box.parse(b) for b in boxes.split("+")]


def read_regions(path: str | os.PathLike[str]) -> dict[str, list[Box]]:
    """Named variants from JSON (``{"face": [[x0,y0,x1,y1], ...]}``) or CSV (``name,x0,y0,x1,y1`` rows).

    Coordinates may be numbers or strings with a ``%`` suffix; rows or lists with the same name form one
    variant of several boxes.
    """
    path = Path(path)
    if not path.is_file():
        raise RegionError(f"Regions file not found: {path}")
    variants: dict[str, list[Box]] = {}
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise RegionError(f"{path}: expected a JSON object of name → list of boxes")
            for name, boxes in data.items():
                if not isinstance(boxes, list) or not boxes:
                    raise RegionError(f"{path}: region {name!r} must be a box [x0, y0, x1, y1] or a list of boxes, "
                                      f"not {json.dumps(boxes)[:40]}")
                if not isinstance(boxes[0], list):
                    boxes = [boxes]
                for box in boxes:
                    if not isinstance(box, list) or not all(isinstance(v, (int, float, str)) and
                                                            not isinstance(v, bool) for v in box):
                        raise RegionError(f"{path}: region {name!r} has a box that is not a list of four numbers: "
                                          f"{json.dumps(box)[:40]}")
                variants[str(name)] = [Box.parse(",".join(str(v) for v in box)) for box in boxes]
        else:
            with path.open(newline="") as handle:
                for line, row in enumerate(csv.reader(handle), start=1):
                    if not row or row[0].strip().lower() in ("name", "") or row[0].startswith("#"):
                        continue
                    if len(row) != 5:
                        raise RegionError(f"{path}:{line}: expected name,x0,y0,x1,y1")
                    variants.setdefault(row[0].strip(), []).append(Box.parse(",".join(row[1:])))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegionError(f"Cannot read regions file {path}: {exc}") from None
    if not variants:
        raise RegionError(f"Regions file {path} names no region")
    return variants
