"""Image-driven analysis: which filters an image drives, and which parts of the image drive them.

* :func:`rank_filters` (:mod:`.ranking`): the mean activation of every filter of a layer over one or
  more images (optionally with random augmentations), the top k, how stable the top k is across images,
  and how concentrated the response is (the paper's section 4.2 and Figure 5).
* :func:`occlusion_study` (:mod:`.occlusion`): the top k of the original and of occluded variants,
  filters in common, change of activation and rank correlation (the paper's section 4.3 and Table 1),
  with regions from :mod:`.regions`.
* :func:`sensitivity_maps` (:mod:`.sensitivity`): a patch slid over the image, batched through the
  truncated network; for each filter, the drop of its mean activation mapped back onto the pixels.

Images enter as paths or PIL images and are put into the network's view with the model's own
preprocessing (:mod:`.inputs`; ``fit="crop"``: resize the shorter side, center crop). Everything runs
under ``torch.no_grad``, in batches, through a :class:`~filterscope.runtime.Forward` that stops at the
analysed layer (:mod:`.activations`); images are decoded by a background thread while the network works
on the previous batch.
"""

from ..runtime.core import ANALYSIS_BATCH
from .activations import layer_means
from .inputs import IMAGE_SUFFIXES, AnalysisImage, collect_images, prepare_image
from .occlusion import FILLS, OcclusionRow, OcclusionStudy, fill_image, occlude, occlusion_study
from .ranking import Concentration, Ranking, concentration, rank_filters
from .receptive_field import ReceptiveField, receptive_field
from .regions import Box, parse_region, read_regions
from .sensitivity import SensitivityMaps, sensitivity_maps

__all__ = [
    "ReceptiveField",
    "receptive_field",
    "ANALYSIS_BATCH", "FILLS", "IMAGE_SUFFIXES", "Box", "AnalysisImage", "Concentration", "Ranking", "OcclusionRow",
    "OcclusionStudy", "SensitivityMaps", "prepare_image", "collect_images", "parse_region", "read_regions",
    "layer_means", "concentration", "rank_filters", "fill_image", "occlude", "occlusion_study", "sensitivity_maps",
]
