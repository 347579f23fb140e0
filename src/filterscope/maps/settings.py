"""How an activation atlas is made: :class:`MapSettings`, checked, with the key that identifies a map."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from ..engine.recipes import list_recipes
from ..errors import InvalidOptionError
from .icons import ICON_POWER, ICON_SIZE
from .layout import GRID, LAYOUTS, MIN_COUNT, MIN_DIST, N_NEIGHBORS
from .samples import POSITIONS, TOP_CLASSES, SampleSpec

__all__ = ["MapSettings", "MAX_SAMPLES"]

MAX_SAMPLES = 50_000
"""At most this many samples are laid out (a seeded subset of more): UMAP's time grows with their number."""


@dataclass(frozen=True)
class MapSettings:
    """An activation atlas of a layer (defaults: the article's and Lucid's choices).

    Attributes:
        positions: ``random`` (one position per image, away from the border) or ``all``.
        seed: Seeds the positions, the layout and the icons.
        grid: Cells a side.
        min_count: Cells with this many samples or fewer are dropped.
        layout: ``umap`` (torchdr) or ``tsne`` (scikit-learn).
        n_neighbors, min_dist: UMAP's.
        label_class: A class atlas: only the samples whose top attributed class is this one.
        compare: A two-class comparison ``(a, b)``: samples attributed to either; x is their attribution to ``a``
            minus ``b`` (ranked), y a one-dimensional layout.
        classes: How many of each image's top classes a sample is attributed to.
        recipe: The icons' recipe (a named one), at ``icon_size`` pixels, cosine power ``power``.
        max_samples: At most this many samples are laid out (a seeded subset).
    """

    positions: str = "random"
    seed: int = 0
    grid: int = GRID
    min_count: int = MIN_COUNT
    layout: str = "umap"
    n_neighbors: int = N_NEIGHBORS
    min_dist: float = MIN_DIST
    label_class: int | None = None
    compare: tuple[int, int] | None = None
    classes: int = TOP_CLASSES
    recipe: str = "filterscope"
    icon_size: int = ICON_SIZE
    power: float = ICON_POWER
    max_samples: int = MAX_SAMPLES

    def __post_init__(self) -> None:
        problems = []
        if self.positions not in POSITIONS:
            problems.append(f"positions must be one of {', '.join(POSITIONS)} (got {self.positions!r})")
        if self.layout not in LAYOUTS:
            problems.append(f"layout must be one of {', '.join(LAYOUTS)} (got {self.layout!r})")
        if self.recipe not in list_recipes():
            problems.append(f"recipe must be one of {', '.join(list_recipes())} (got {self.recipe!r})")
        for name, low in (("grid", 1), ("min_count", 0), ("n_neighbors", 2), ("icon_size", 16), ("max_samples", 10),
                          ("classes", 0)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                problems.append(f"{name} must be a whole number of at least {low} (got {getattr(self, name)!r})")
        if not 0 <= self.min_dist <= 1:
            problems.append(f"min_dist must be between 0 and 1 (got {self.min_dist})")
        if self.label_class is not None and self.compare is not None:
            problems.append("a map is either of one class or a comparison of two, not both")
        if self.compare is not None and (len(self.compare) != 2 or self.compare[0] == self.compare[1]):
            problems.append(f"compare needs two different classes (got {self.compare})")
        if problems:
            raise InvalidOptionError("Map settings: " + "; ".join(problems))

    @property
    def samples(self) -> SampleSpec:
        """What the exemplar pass collects for this map (the samples depend on the positions and the seed)."""
        return SampleSpec(self.positions, self.seed, self.classes)

    def key(self, samples_id: int, weights_hash: str) -> str:
        """The map's identity: its samples, the model's weights and every setting."""
        text = json.dumps({"samples": samples_id, "weights": weights_hash, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict[str, object]:
        """The settings as JSON data (``compare`` a list), as an atlas stores them."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> MapSettings:
        """Settings stored by :meth:`to_dict` (a setting an older atlas lacks takes its default)."""
        known = {f.name for f in fields(cls)}
        values = {k: tuple(v) if k == "compare" and isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**values)  # type: ignore[arg-type]  # checked by __post_init__

    def describe(self) -> str:
        what = (f"class {self.label_class}" if self.label_class is not None
                else f"classes {self.compare[0]} vs {self.compare[1]}" if self.compare else "all samples")
        return f"{self.grid}x{self.grid} {self.layout}, {self.positions} positions, {what}"
