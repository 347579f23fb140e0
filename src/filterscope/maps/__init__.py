"""Activation atlases (Carter, Armstrong, Schubert, Johnson, Olah 2019): a map of a whole layer's activation
space over the user's images.

* :mod:`.samples`: what the exemplar pass collects (a vector per image at a seeded position, or at every one,
  with its attribution to the image's top classes);
* :mod:`.layout`: UMAP (torchdr) or t-SNE, normalized, binned into a grid of cells;
* :mod:`.icons`: each cell's mean vector, whitened, rendered as a direction at the centre position;
* :mod:`.settings`: :class:`MapSettings`; :mod:`.result`: :class:`ActivationMap` read back from an atlas;
  :mod:`.figure`: the picture.

The build stage that ties them to an atlas is :mod:`filterscope.atlas.maps`; users call
``fs.Atlas(path).build(..., maps=True)``, ``filterscope atlas map`` and ``fs.Atlas(path).map(layer)``.
"""

from .icons import ICON_SIZE, second_moment, whitening
from .layout import bin_cells, lay_out, normalize_layout
from .result import ActivationMap, MapCell
from .samples import POSITIONS, SampleSpec, sample_places
from .settings import MapSettings

__all__ = ["MapSettings", "ActivationMap", "MapCell", "SampleSpec", "POSITIONS", "ICON_SIZE", "lay_out",
           "normalize_layout", "bin_cells", "second_moment", "whitening", "sample_places"]
