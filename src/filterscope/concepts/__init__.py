"""Concepts: sparse dictionaries of a CNN layer, each concept a direction in the layer's activation space.

* :mod:`.dictionary`: the :class:`Dictionary` protocol (``encode``/``decode``; plug in one trained elsewhere),
  the normalizer, the channel and PCA baselines;
* :mod:`.sae`: TopK and BatchTopK sparse autoencoders with the AuxK loss, hand-written in torch;
* :mod:`.vectors`: a layer's activation vectors over images (mirrored too, or drawn by norm);
* :mod:`.quality`: FVE, L0, dead and dense concepts, the spliced-in effect, stability, planted-atom recovery;
* :mod:`.concepts`: :func:`train_dictionary` (split, collect, train, measure) and the saved file.
"""

from .concepts import ConceptDictionary, held_out_split, load_dictionary, train_dictionary
from .dictionary import Dictionary, Normalizer, SparseBasis, atoms_of, channel_basis, pca_basis
from .quality import DictionaryQuality, Stability, measure, recovered, spliced, stability
from .sae import SAESettings, SparseAutoencoder, train_sae
from .vectors import ActivationVectors, collect_vectors, layer_grids

__all__ = ["ConceptDictionary", "train_dictionary", "load_dictionary", "held_out_split", "Dictionary", "Normalizer",
           "SparseBasis", "atoms_of", "channel_basis", "pca_basis", "DictionaryQuality", "Stability", "measure",
           "recovered", "spliced", "stability", "SAESettings", "SparseAutoencoder", "train_sae", "ActivationVectors",
           "collect_vectors", "layer_grids"]
