"""Moved to :mod:`filterscope.engine.objectives`: this path imports, with a ``DeprecationWarning``, for one release."""

from ._deprecated import moved_module

__getattr__ = moved_module(__name__, "filterscope.engine.objectives")
