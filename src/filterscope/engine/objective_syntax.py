"""The objective string syntax: ``"channel(layer4.2.relu, 484) - 0.5*channel(layer4.2.relu, 257)"``.

Parsed by recursive descent over ``expr := term (('+'|'-') term)*``, ``term := unary ('*' unary)*``,
``unary := '-' unary | NUMBER | '(' expr ')' | NAME '(' args ')'``, where ``NAME`` is a function
registered in :data:`filterscope.objectives.OBJECTIVES`. Errors name the 1-based position. Nesting is
bounded (:data:`MAX_DEPTH`), so no input can exhaust Python's stack.

:func:`as_objectives` is how every function that takes objectives accepts strings as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..arguments import checked
from ..errors import InvalidObjectiveError, did_you_mean
from .objectives import OBJECTIVES, Objective

__all__ = ["parse_objective", "as_objective", "as_objectives", "ObjectiveLike", "MAX_DEPTH"]

MAX_DEPTH = 100
"""Most nested parentheses and unary signs an objective string may have."""
MAX_TERMS = 256
"""Most functions and numbers one objective string may combine (objectives are trees: deeper ones would
exhaust Python's stack when resolved or evaluated)."""


class _Parser:
    """Recursive descent over ``expr := term (('+'|'-') term)*``, ``term := unary ('*' unary)*``,
    ``unary := '-' unary | NUMBER | '(' expr ')' | NAME '(' args ')'``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0
        self.terms = 0
        self.shown = repr(text if len(text) <= 80 else text[:77] + "...")  # the text as errors quote it

    def fail(self, expected: str) -> InvalidObjectiveError:
        found = repr(self.text[self.pos]) if self.pos < len(self.text) else "the end"
        return InvalidObjectiveError(
            f"Invalid objective {self.shown}: expected {expected} at position {self.pos + 1}, found {found}. "
            f"Functions: {', '.join(OBJECTIVES.names())}")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.fail(f"'{char}'")
        self.pos += 1

    def parse(self) -> Objective:
        result = self.expr()
        if self.peek():
            raise self.fail("'+', '-', '*' or the end")
        if not isinstance(result, Objective):
            raise InvalidObjectiveError(f"Invalid objective {self.shown}: it is a plain number, name a unit "
                                        "such as channel(LAYER, N)")
        return result

    def expr(self) -> Objective | float:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.text[self.pos]
            self.pos += 1
            right = self.term()
            value = value + right if op == "+" else value - right
        return value

    def term(self) -> Objective | float:
        value = self.unary()
        while self.peek() == "*":
            self.pos += 1
            value = value * self.unary()
        return value

    def unary(self) -> Objective | float:
        char = self.peek()
        if char in ("-", "("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(f"at most {MAX_DEPTH} nested parentheses or signs, not more")
            self.pos += 1
            if char == "-":
                value = -self.unary()
            else:
                value = self.expr()
                self.expect(")")
            self.depth -= 1
            return value
        if char.isdigit() or char == ".":
            return self.number()
        if char.isalpha():
            return self.call()
        raise self.fail("a number, a function or '('")

    def count(self) -> None:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise InvalidObjectiveError(f"Invalid objective: more than {MAX_TERMS} functions and numbers; combine "
                                        "fewer units per objective (or build it in Python)")

    def number(self, integer: bool = False) -> float | int:
        self.count()
        self.skip()
        start = self.pos
        if self.pos < len(self.text) and self.text[self.pos] in "+-":
            self.pos += 1
        while self.pos < len(self.text) and (self.text[self.pos].isdigit() or self.text[self.pos] in ".eE"):
            if self.text[self.pos] in "eE" and self.pos + 1 < len(self.text) and self.text[self.pos + 1] in "+-":
                self.pos += 1
            self.pos += 1
        token = self.text[start:self.pos]
        try:
            value = int(token) if integer else float(token)
        except (ValueError, OverflowError):
            self.pos = start
            raise self.fail("an integer" if integer else "a number") from None
        if not math.isfinite(value):
            self.pos = start
            raise self.fail("a finite number")
        return value

    def raw(self) -> str:
        self.skip()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ",)":
            self.pos += 1
        value = self.text[start:self.pos].strip()
        if not value:
            self.pos = start
            raise self.fail("a layer name")
        return value

    def vector(self) -> tuple[float, ...]:
        self.expect("[")
        values = [float(self.number())]
        while self.peek() == ",":
            self.pos += 1
            values.append(float(self.number()))
        self.expect("]")
        return tuple(values)

    def call(self) -> Objective:
        self.count()
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] == "_"):
            self.pos += 1
        name = self.text[start:self.pos]
        if name not in OBJECTIVES:
            raise InvalidObjectiveError(f"Invalid objective {self.shown}: unknown function {name!r} at position "
                                        f"{start + 1}.{did_you_mean(name, OBJECTIVES.names())} Functions: "
                                        f"{', '.join(OBJECTIVES.names())}")
        function = OBJECTIVES.get(name)
        self.expect("(")
        args: list[object] = []
        for i, kind in enumerate(function.arguments):
            if i > 0:
                if self.peek() != ",":
                    if kind.endswith("?"):
                        break
                    raise self.fail("','")
                self.pos += 1
            base = kind.rstrip("?")
            if base == "objective":
                argument = self.expr()
                if not isinstance(argument, Objective):
                    raise self.fail("an objective such as channel(LAYER, N)")
                args.append(argument)
            else:
                args.append(self.raw() if base == "layer" else self.vector() if base == "vector"
                            else self.number(integer=base == "int"))
        self.expect(")")
        return function.build(*args)


@checked
def parse_objective(text: str) -> Objective:
    """Parse the objective syntax, e.g. ``channel(layer4.2.relu, 484) - 0.5*channel(layer4.2.relu, 257)``.

    Functions (the registry :data:`~filterscope.objectives.OBJECTIVES`; add your own with
    :func:`~filterscope.objectives.register_objective`): ``channel(LAYER, N)``, ``neuron(LAYER, N[, Y,
    X])``, ``class(N)`` (or ``logit``), ``layer(LAYER)`` (or ``deepdream``), ``direction(LAYER, [v0, v1,
    ...])``, ``diversity(LAYER)``; numbers; ``+ - *`` and parentheses. Descriptions of objectives parse
    back to the same objective.

    Raises:
        InvalidObjectiveError: with the 1-based position of the first error.
    """
    if not isinstance(text, str):
        raise InvalidObjectiveError(f"An objective string is needed, not {type(text).__name__}")
    return _Parser(text).parse()


ObjectiveLike = Objective | str
"""An objective, or its string form (parsed with :func:`parse_objective`)."""


def as_objective(objective: ObjectiveLike) -> Objective:
    """An :class:`Objective` as it is; a string parsed with :func:`parse_objective`.

    Raises:
        InvalidObjectiveError: a malformed string, or something that is neither.
    """
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, str):
        return parse_objective(objective)
    raise InvalidObjectiveError(f"Expected an objective or an objective string such as 'channel(LAYER, 3)', "
                                f"not {type(objective).__name__}")


@checked
def as_objectives(objectives: ObjectiveLike | Sequence[ObjectiveLike]) -> list[Objective]:
    """One objective or string, or a sequence of them, as a list of :class:`Objective` (a string is one
    objective, never a sequence of characters)."""
    if isinstance(objectives, (Objective, str)):
        return [as_objective(objectives)]
    return [as_objective(o) for o in objectives]
