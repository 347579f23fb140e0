"""Old import paths that keep working for one release: a module's ``__getattr__`` that finds a moved name in its
new module and warns with a ``DeprecationWarning`` naming where it lives now."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable

__all__ = ["moved", "moved_module"]


def moved(module: str, names: dict[str, str]) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for ``module``: each name of ``names`` comes from the module it maps to."""

    def __getattr__(name: str) -> object:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(f"{module}.{name} moved to {names[name]}.{name}; import it from there (the old path goes "
                      "in the next release)", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(names[name]), name)

    return __getattr__


def moved_module(module: str, new: str) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for a module that moved whole to ``new``: every name comes from there."""

    def __getattr__(name: str) -> object:
        target = importlib.import_module(new)
        if name.startswith("__") or not hasattr(target, name):
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(f"{module} moved to {new}; import {name} from there (the old path goes in the next release)",
                      DeprecationWarning, stacklevel=2)
        return getattr(target, name)

    return __getattr__
