"""The kinds of atlas work, one module each, registered in :data:`~.base.STAGES` (see :mod:`.base`).

In build order: :mod:`.exemplars` (the exemplar pass), :mod:`.crops`, :mod:`.circuits`, :mod:`.renders`,
:mod:`.maps` (``map-samples``, ``map-layout``, ``map-icons``), :mod:`.trust`, :mod:`.concepts`, :mod:`.diff`.

Adding a kind of atlas work is one module here: a frozen task dataclass, a module-level task function
``run(model, task, report) -> outcome`` that reads and writes nothing, and a :class:`~.base.Stage` subclass
(``name``, ``after``, ``wanted``, ``plan``, ``record``; ``tables`` when it keeps records of its own, ``files``
and ``invalidate`` when its records name files) decorated with :func:`~.base.register_stage`; then its import
below. Its settings are a class of its own, passed as ``build_atlas(stages=[...])`` and found with
``request.option(TheSettings)``. The build, ``atlas check`` and the summary pick it up from the registry.
"""

from . import circuits, concepts, crops, diff, exemplars, maps, renders, trust  # noqa: F401  (registration)
from .base import (
    STAGES,
    BuildContext,
    BuildProgress,
    BuildRequest,
    BuildSummary,
    LayerPlan,
    NamedFile,
    Recorded,
    Stage,
    StageReport,
    has_table,
    register_stage,
    stage_order,
)

__all__ = ["STAGES", "Stage", "StageReport", "Recorded", "BuildContext", "BuildProgress", "BuildRequest",
           "BuildSummary", "LayerPlan", "NamedFile", "register_stage", "stage_order", "has_table"]
