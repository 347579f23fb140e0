"""Moved to :mod:`filterscope.atlas.stages.circuits` (this path keeps working for one release, with a
``DeprecationWarning``)."""

from .._deprecated import moved

__getattr__ = moved(__name__, dict.fromkeys([
    "CircuitTask", "CircuitOutcome", "circuit_task", "record_circuits", "ExemplarItem", "CIRCUIT_EXEMPLARS",
    "CIRCUIT_DRAWS", "circuit_tasks"
], "filterscope.atlas.stages.circuits"))
