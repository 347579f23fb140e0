"""An activation atlas read back from an atlas folder: :class:`ActivationMap` and its :class:`MapCell` s."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from ..analysis.inputs import decode_image, decoded
from ..analysis.receptive_field import ReceptiveField
from ..tensors import to_pil
from ..zoo.preprocessing import Preprocessing
from .figure import map_figure
from .settings import MapSettings

__all__ = ["ActivationMap", "MapCell", "member_patch"]


@dataclass(frozen=True)
class MapCell:
    """A kept cell of a map.

    Attributes:
        row, col: Its place on the grid (row from the top).
        count: How many samples fall in it; ``members`` their indices among the map's samples.
        label: The class most members are attributed to (``None`` without attributions), ``label_name`` its
            name, ``label_share`` the share of members it labels.
        mean: The members' mean activation vector ``(C,)``.
        icon: The icon file (``None`` until rendered), with its objective ``initial`` → ``final`` and the
            ``cosine`` of its centre activation with ``mean``.
    """

    row: int
    col: int
    count: int
    label: int | None
    label_name: str | None
    label_share: float | None
    mean: np.ndarray
    icon: Path | None
    initial: float | None
    final: float | None
    cosine: float | None
    members: np.ndarray


@dataclass(frozen=True)
class ActivationMap:
    """A layer's activation atlas.

    Attributes:
        layer: The layer.
        settings: How it was made.
        coords: ``(N, 2)`` each sample's place in [0, 1] (x, y; NaN for samples the map leaves out).
        places: ``(N, 3)`` each sample's image (dataset index), y and x on the layer's grid (image -1: none).
        images: The dataset's image paths, by index.
        cells: The kept cells, row by row.
        trustworthiness: Of the layout (scikit-learn's, k = 10, cosine), on a seeded subset of 2,000 samples.
    """

    layer: str
    settings: MapSettings
    coords: np.ndarray
    places: np.ndarray
    images: list[str]
    cells: list[MapCell]
    trustworthiness: float | None

    @property
    def grid(self) -> int:
        return self.settings.grid

    def cell(self, row: int, col: int) -> MapCell:
        for c in self.cells:
            if (c.row, c.col) == (row, col):
                return c
        raise KeyError(f"No kept cell at row {row}, column {col} of the {self.grid}x{self.grid} map of {self.layer}")

    def members(self, cell: MapCell, limit: int | None = None) -> list[tuple[str, int, int]]:
        """``(image path, y, x)`` of a cell's members (the first ``limit``)."""
        chosen = cell.members if limit is None else cell.members[:limit]
        return [(self.images[int(self.places[i, 0])], int(self.places[i, 1]), int(self.places[i, 2]))
                for i in chosen]

    def figure(self, *, cell: int = 72, density: bool = False, labels: bool = True) -> Image.Image:
        """The icons on the grid, with their labels (:func:`~filterscope.maps.figure.map_figure`)."""
        return map_figure(self.grid, [(c.row, c.col, c.count, c.label_name, c.icon) for c in self.cells], cell=cell,
                          density=density, labels=labels)

    def _repr_png_(self) -> bytes:
        import io

        buffer = io.BytesIO()
        self.figure(cell=48).save(buffer, format="PNG")
        return buffer.getvalue()


def member_patch(path: str, y: int, x: int, preprocessing: Preprocessing, field: ReceptiveField | None,
                 fit: str = "crop") -> Image.Image:
    """The patch of a dataset image that a sample at ``(y, x)`` of the layer's grid sees: the image placed in
    the network's input as the pass placed it (``fit``), cut to the position's receptive field."""
    holder = SimpleNamespace(preprocessing=preprocessing)  # decode_image reads only the preprocessing
    view = to_pil(decoded(*decode_image(holder, path, fit, None)).pixels)  # type: ignore[arg-type]
    if field is None:
        return view
    box = field.box(y, x, preprocessing.input_shape)
    return view.crop(box) if box[2] > box[0] and box[3] > box[1] else view
