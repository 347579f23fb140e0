"""What an image is made of, at one layer ("The Building Blocks of Interpretability", Olah et al. 2018).

* :func:`semantic_dictionary` (:mod:`.dictionary`): at each position, the units that fire most;
* :func:`neuron_groups` (:mod:`.groups`): the activations factored by NMF into a few groups of units, each with
  a heat map over the image and a direction over the units;
* :func:`spatial_attribution` (:mod:`.attribution`): activation × gradient of a class at each position, and
  each group's share;
* :func:`caricature`, :func:`invert`, :func:`accentuate` (:mod:`.seeded`): renders seeded by the image.

The image is taken in the model's own view (:func:`~filterscope.analysis.prepare_image`; ``fit``).
"""

from .activations import ImageLike, layer_activations
from .attribution import SpatialAttribution, spatial_attribution
from .dictionary import SemanticDictionary, semantic_dictionary
from .groups import PARTS, NeuronGroups, neuron_groups
from .seeded import SEEDED, accentuate, caricature, invert

__all__ = ["ImageLike", "layer_activations", "SpatialAttribution", "spatial_attribution", "SemanticDictionary",
           "semantic_dictionary", "PARTS", "NeuronGroups", "neuron_groups", "caricature", "invert", "accentuate",
           "SEEDED"]
