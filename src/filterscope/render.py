"""Moved to :mod:`filterscope.engine.render`: this path imports, with a ``DeprecationWarning``, for one release."""

from ._deprecated import moved_module

__getattr__ = moved_module(__name__, "filterscope.engine.render")
