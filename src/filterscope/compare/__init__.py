"""Model diff (``fs.diff``): what two networks, or two checkpoints of one, share and where they differ.

- :mod:`.cka`: linear CKA between every layer of one network and every layer of the other (debiased).
- :mod:`.matching`: unit matching between two layers: correlations over images and positions, the one-to-one
  (Hungarian) matching, mutual best buddies, a threshold from a shuffled-image null.
- :mod:`.diff`: :func:`diff`, one paired pass of the same images through both networks, and its
  :class:`ModelDiff`; :mod:`.figure` draws it.
"""

from .cka import cka, cka_matrix, gram
from .diff import ModelDiff, default_layers, diff
from .matching import LayerMatch, Match, match_units, unit_correlations

__all__ = ["cka", "cka_matrix", "gram", "ModelDiff", "default_layers", "diff", "LayerMatch", "Match", "match_units",
           "unit_correlations"]
