"""Registries: named, user-extensible collections of models, parameterizations, transforms and objectives.

One small class serves them all, in the manner of timm's ``@register_model`` / ``list_models``: an entry
is added with a decorator under a unique name, listed with an fnmatch pattern, and looked up by name
with an error that names the closest entries and how to list them. A user (or a later module of ours)
adds an entry without editing any ``if kind == ...`` chain::

    @fs.register_param("mine")
    class MyParam(fs.Param): ...

This module imports only :mod:`filterscope.errors`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import FilterscopeError, did_you_mean

__all__ = ["Registry"]

T = TypeVar("T")


def _natural(name: str) -> list[int | str]:
    """Sort key that puts ``resnet18`` before ``resnet101``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class Registry(Generic[T]):
    """Entries of one kind, by unique name.

    Args:
        kind: What the entries are, in words ("model", "parameterization"), for error messages.
        error: The :class:`FilterscopeError` subclass raised for an unknown name.
        hint: How a user lists the entries (e.g. ``filterscope models``), appended to that error.
    """

    def __init__(self, kind: str, error: type[FilterscopeError] = FilterscopeError, hint: str = "") -> None:
        self.kind = kind
        self.error = error
        self.hint = hint
        self._entries: dict[str, T] = {}

    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]:
        """Decorator: add the decorated object under ``name``; a name already taken is an error unless
        ``replace``. Returns the object unchanged."""
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"A {self.kind} name must be a non-empty string without surrounding spaces "
                             f"(got {name!r})")

        def decorator(entry: T) -> T:
            if name in self._entries and not replace:
                raise ValueError(f"A {self.kind} named {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return decorator

    def add(self, name: str, entry: T, *, replace: bool = False) -> T:
        """``register(name)(entry)`` without the decorator syntax."""
        return self.register(name, replace=replace)(entry)

    def get(self, name: str) -> T:
        """The entry called ``name``.

        Raises:
            FilterscopeError: (the registry's ``error`` class) no such entry; the message names the
                closest ones and all of them when there are few.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.error(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        choices = self.names()
        listed = f" Choices: {', '.join(choices)}." if len(choices) <= 12 else ""
        hint = f" List them with: {self.hint}" if self.hint else ""
        return f"Unknown {self.kind} {name!r}.{did_you_mean(str(name), choices)}{listed}{hint}"

    def names(self, pattern: str = "*") -> list[str]:
        """Names matching the fnmatch ``pattern``, in natural order."""
        return sorted((n for n in self._entries if fnmatch.fnmatch(n, pattern)), key=_natural)

    def registered(self) -> list[str]:
        """Every name, in the order the entries were registered."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<Registry of {len(self)} {self.kind}(s): {', '.join(self.names())}>"
