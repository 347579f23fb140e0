"""Can this picture be trusted, and what is this unit? Per-unit faithfulness scores and offline descriptions.

- :mod:`.paths`: path similarity (after Geirhos et al. 2024): does the render drive the earlier layers the way the
  unit's natural exemplars do?
- :mod:`.afc`: the machine 2-AFC score (after Borowski et al. 2021 and the Machine Interpretability Score): how
  well renders (of both signs) or exemplars predict which of two images drives the unit more, judged in a feature
  space (:mod:`.judges`, chosen by measurement: EfficientNet-Lite2's blocks at the unit's depth; the network
  is :mod:`.independent`).
- :mod:`.describe`: exemplar consensus up the WordNet hierarchy, colours, spread, class effect.
- :mod:`.unit`: one unit's :class:`UnitTrust` from a dataset and renders; :func:`trust_units` for a layer.

Random baselines that are alive are :mod:`filterscope.zoo.calibration`'s; renders that did not rise are
``not-improved`` (:func:`filterscope.render.improved`).
"""

from .afc import AFCScore, RenderTest, machine_afc, render_test
from .describe import Consensus, Description, consensus
from .independent import INDEPENDENT, Independent, independent_network
from .judges import JUDGES, Judge
from .paths import PathSimilarity, channel_vectors, path_layers, path_similarity, spearman
from .unit import TrustData, UnitTrust, trust_units, unit_trust

__all__ = ["AFCScore", "RenderTest", "machine_afc", "render_test", "Consensus", "Description", "consensus",
           "INDEPENDENT", "Independent", "independent_network", "JUDGES", "Judge", "PathSimilarity", "channel_vectors",
           "path_layers", "path_similarity", "spearman", "TrustData", "UnitTrust", "trust_units", "unit_trust"]
