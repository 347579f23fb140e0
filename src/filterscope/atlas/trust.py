"""Moved to :mod:`filterscope.atlas.stages.trust` (this path keeps working for one release, with a
``DeprecationWarning``)."""

from .._deprecated import moved

__getattr__ = moved(__name__, dict.fromkeys([
    "TrustTask", "TrustOutcome", "trust_task", "record_trust", "trust_tasks"
], "filterscope.atlas.stages.trust"))
