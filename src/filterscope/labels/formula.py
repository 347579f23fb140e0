"""Compositional descriptions: formulas of AND, OR and NOT over named concepts, evaluated on a concept matrix.

A formula is a small tree (:class:`Concept`, :class:`Not`, :class:`And`, :class:`Or`); ``evaluate(present)``
gives, for a boolean matrix ``present`` ``(N, K)`` (image ``i`` shows concept ``k``), the images where the formula
holds. :func:`parse` reads one back from text with the usual precedence (NOT binds tightest, then AND, then OR;
parentheses group) and concept names of several words: ``terrier OR (dog AND NOT grass)``.

Hand-written: a recursive-descent parser of a dozen lines; no formula library fits a concept matrix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InvalidOptionError

__all__ = ["Formula", "Concept", "Not", "And", "Or", "parse"]


class Formula:
    """A description: ``evaluate(present)`` ``(N,)`` bool, ``text(names)`` for people, ``length`` its concepts."""

    def evaluate(self, present: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def text(self, names: Sequence[str]) -> str:
        raise NotImplementedError

    @property
    def length(self) -> int:
        raise NotImplementedError


@dataclass(frozen=True)
class Concept(Formula):
    index: int

    def evaluate(self, present: torch.Tensor) -> torch.Tensor:
        return present[:, self.index]

    def text(self, names: Sequence[str]) -> str:
        return names[self.index]

    @property
    def length(self) -> int:
        return 1


@dataclass(frozen=True)
class Not(Formula):
    inner: Formula

    def evaluate(self, present: torch.Tensor) -> torch.Tensor:
        return ~self.inner.evaluate(present)

    def text(self, names: Sequence[str]) -> str:
        inner = self.inner.text(names)
        return f"NOT {inner}" if isinstance(self.inner, Concept | Not) else f"NOT ({inner})"

    @property
    def length(self) -> int:
        return self.inner.length


@dataclass(frozen=True)
class And(Formula):
    left: Formula
    right: Formula

    def evaluate(self, present: torch.Tensor) -> torch.Tensor:
        return self.left.evaluate(present) & self.right.evaluate(present)

    def text(self, names: Sequence[str]) -> str:
        def part(f: Formula) -> str:
            return f"({f.text(names)})" if isinstance(f, Or) else f.text(names)
        return f"{part(self.left)} AND {part(self.right)}"

    @property
    def length(self) -> int:
        return self.left.length + self.right.length


@dataclass(frozen=True)
class Or(Formula):
    left: Formula
    right: Formula

    def evaluate(self, present: torch.Tensor) -> torch.Tensor:
        return self.left.evaluate(present) | self.right.evaluate(present)

    def text(self, names: Sequence[str]) -> str:
        return f"{self.left.text(names)} OR {self.right.text(names)}"

    @property
    def length(self) -> int:
        return self.left.length + self.right.length


_TOKEN = re.compile(r"\(|\)|[^()\s]+")


def parse(text: str, names: Sequence[str]) -> Formula:
    """The formula ``text`` over concepts ``names`` (matched without regard to case; a name may have several
    words; the keywords AND, OR, NOT are upper case).

    Raises:
        InvalidOptionError: an unknown concept (naming a few that are known) or a malformed formula.
    """
    index = {name.lower(): i for i, name in enumerate(names)}
    tokens = _TOKEN.findall(text)
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def concept() -> Formula:
        words = []
        while peek() not in (None, "(", ")", "AND", "OR", "NOT"):
            words.append(take())
        name = " ".join(words).lower()
        if not name:
            raise InvalidOptionError(f"Formula {text!r}: a concept is missing after {' '.join(tokens[:position])!r}")
        if name not in index:
            close = [n for n in names if name in n.lower()][:5]
            raise InvalidOptionError(f"Formula {text!r}: unknown concept {name!r}" +
                                     (f" (did you mean {', '.join(close)}?)" if close else ""))
        return Concept(index[name])

    def atom() -> Formula:
        if peek() == "NOT":
            take()
            return Not(atom())
        if peek() == "(":
            take()
            inner = either()
            if peek() != ")":
                raise InvalidOptionError(f"Formula {text!r}: a parenthesis is not closed")
            take()
            return inner
        return concept()

    def both() -> Formula:
        found = atom()
        while peek() == "AND":
            take()
            found = And(found, atom())
        return found

    def either() -> Formula:
        found = both()
        while peek() == "OR":
            take()
            found = Or(found, both())
        return found

    result = either()
    if peek() is not None:
        raise InvalidOptionError(f"Formula {text!r}: unexpected {peek()!r}")
    return result
