"""Labels with evidence: what a unit detects, as a scored formula over dataset concepts with a p-value, offline.

- :mod:`.concepts`: which concepts each image shows (WordNet ids in file names, else an independent network's
  classes), lifted up the WordNet hierarchy;
- :mod:`.formula`: AND / OR / NOT formulas over concepts, and their parser;
- :mod:`.metrics`: AUPRC (default), F1, IoU, Pearson (NeuronEval's passing metrics) and AUC, vectorized;
- :mod:`.search`: the beam search, held-out scores, Mann-Whitney p-values corrected over units, the exemplars that
  support and contradict each label; :func:`check_label` scores any description the same way;
- :mod:`.label`: :func:`label_layer`, from a model and image files.
"""

from .concepts import ConceptMatrix, from_wordnet_ids, wordnet_id
from .formula import Formula, parse
from .label import image_concepts, label_layer
from .metrics import METRICS
from .search import UnitLabel, best_formula, check_label, label_units

__all__ = ["ConceptMatrix", "from_wordnet_ids", "wordnet_id", "Formula", "parse", "image_concepts", "label_layer",
           "METRICS", "UnitLabel", "best_formula", "check_label", "label_units"]
