"""Moved to :mod:`filterscope.atlas.stages.maps` (this path keeps working for one release, with a
``DeprecationWarning``)."""

from .._deprecated import moved

__getattr__ = moved(__name__, dict.fromkeys([
    "SampleWriter", "MapLayer", "collect_samples", "lay_out_map", "icon_tasks", "record_icons", "sample_labels",
    "run_icons", "IconsDone", "sample_stem", "attributed_classes", "ICONS_PER_TASK", "TRUST_SAMPLE"
], "filterscope.atlas.stages.maps"))
