"""The red-team audit: manipulated copies of a network whose pictures lie, and how well the trust signals catch them.

- :mod:`.manipulations`: fooling units (after Geirhos et al. 2024) and silent units, on a copy of the network.
- :mod:`.audit`: :func:`audit_layer` renders and scores manipulated and untouched units of one layer and reports each
  signal's ROC AUC, detection and false-alarm rates (:class:`AuditReport`).
- :mod:`.figure`: the ROC curves.
"""

from .audit import SIGNALS, AuditedUnit, AuditReport, SignalScore, audit_layer
from .figure import audit_figure
from .manipulations import MANIPULATIONS, Manipulated, Manipulation, NaturalDrift, NaturalGate, manipulate

__all__ = ["SIGNALS", "AuditedUnit", "AuditReport", "SignalScore", "audit_layer", "audit_figure", "MANIPULATIONS",
           "Manipulated", "Manipulation", "NaturalDrift", "NaturalGate", "manipulate"]
