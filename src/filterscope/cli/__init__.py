"""The ``filterscope`` command line: thin wrappers over the library.

* :mod:`.app`: the Typer application, ``--debug``/``--version``, the one-line error guard;
* :mod:`.options`: options shared by several commands, and the recipe and speed option bundles;
* :mod:`.progress`: progress bars; :mod:`.pictures`: units' optimized images for the figures (atlas, kept, or rendered);
* one module per command group: :mod:`.catalog` (models, layers, recipes), :mod:`.visualize`,
  :mod:`.analyze` (top, occlude), :mod:`.circuit`, :mod:`.explain` (explain, seeded), :mod:`.evaluate`, :mod:`.trust`, :mod:`.audit`, :mod:`.concepts`, :mod:`.diff`, :mod:`.label`, :mod:`.atlas` (atlas build, status, show), :mod:`.maps` (atlas map), :mod:`.serve`, :mod:`.demo`.

Only this package imports Typer or prints.
"""

from .app import app, main

# Each module registers its commands; imported in the order --help lists them.
from . import catalog, visualize, analyze, circuit, explain, evaluate, trust, audit, concepts, diff, label, atlas, maps, serve, demo  # noqa: F401  # isort: skip

__all__ = ["app", "main"]
