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


class _Parser:
    """A recursive-descent reading of one formula's tokens (see :func:`parse`)."""

    def __init__(self, text: str, names: Sequence[str]) -> None:
        self.text, self.names = text, names
        self.index = {name.lower(): i for i, name in enumerate(names)}
        self.tokens, self.position = _TOKEN.findall(text), 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> str:
        self.position += 1
        return self.tokens[self.position - 1]

    def concept(self) -> Formula:
        words = []
        while self.peek() not in (None, "(", ")", "AND", "OR", "NOT"):
            words.append(self.take())
        name = " ".join(words).lower()
        if not name:
            raise InvalidOptionError(f"Formula {self.text!r}: a concept is missing after "
                                     f"{' '.join(self.tokens[:self.position])!r}")
        if name not in self.index:
            close = [n for n in self.names if name in n.lower()][:5]
            raise InvalidOptionError(f"Formula {self.text!r}: unknown concept {name!r}" +
                                     (f" (did you mean {', '.join(close)}?)" if close else ""))
        return Concept(self.index[name])

    def atom(self) -> Formula:
        if self.peek() == "NOT":
            self.take()
            return Not(self.atom())
        if self.peek() == "(":
            self.take()
            inner = self.either()
            if self.peek() != ")":
                raise InvalidOptionError(f"Formula {self.text!r}: a parenthesis is not closed")
            self.take()
            return inner
        return self.concept()

    def both(self) -> Formula:
        found = self.atom()
        while self.peek() == "AND":
            self.take()
            found = And(found, self.atom())
        return found

    def either(self) -> Formula:
        found = self.both()
        while self.peek() == "OR":
            self.take()
            found = Or(found, self.both())
        return found


def parse(text: str, names: Sequence[str]) -> Formula:
    """The formula ``text`` over concepts ``names`` (matched without regard to case; a name may have several
    words; the keywords AND, OR, NOT are upper case).

    Raises:
        InvalidOptionError: an unknown concept (naming a few that are known) or a malformed formula.
    """
    parser = _Parser(text, names)
    result = parser.either()
    if parser.peek() is not None:
        raise InvalidOptionError(f"Formula {text!r}: unexpected {parser.peek()!r}")
    return result
