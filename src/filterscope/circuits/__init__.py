"""Circuits: how a unit is built from the units before it, what it feeds, and whether the weights explain it.

* :func:`expanded_weights` (:mod:`.weights`): the linear map from layer A's channels to a later layer B's,
  through the :func:`~.linear.linearized` network: ``(C_B, C_A, kh, kw)``, closed forms in the docstring.
* :func:`class_effects` (:mod:`.classes`): the linearized direct effect of units on the logits.
* :func:`attribution`, :func:`ablation_check` (:mod:`.evidence`): the real network on a unit's exemplars:
  activation x gradient per input channel, and the drop when the top inputs are zeroed against random ones.
* :func:`circuit` (:mod:`.circuit`): all of it for one unit, as a :class:`Circuit`.

(Olah et al. 2020, "Zoom In"; Voss et al. 2021, "Visualizing Weights", Distill.)
"""

from .._deprecated import moved
from .circuit import Circuit, circuit, exemplar_pixels
from .classes import ClassEffects, class_effects
from .evidence import AblationCheck, ablation_check, attribute, attribution, peaks
from .linear import linearized
from .weights import Connection, ExpandedWeights, expanded_weights

__all__ = ["Circuit", "circuit", "exemplar_pixels", "ClassEffects", "class_effects", "AblationCheck",
           "ablation_check", "attribute", "attribution", "peaks", "linearized", "Connection",
           "ExpandedWeights", "expanded_weights"]

__getattr__ = moved(__name__, {"Intervene": "filterscope.hooks"})
