"""A unit's circuit in the atlas, typed: the sections the circuits stage records and every reader gets back.

* :class:`InputsSection`: from the layer built before (expanded weights, attribution, the ablation check);
* :class:`OutputsSection`: into the layer built after;
* :class:`ClassesSection`: the classes the unit promotes and suppresses;

each a list of :class:`Link` s (a unit of the other layer, or a class, with its weight). Each section is stored as
the JSON its ``to_dict`` gives (the same JSON :meth:`filterscope.circuits.Circuit.to_dict` gives for it, so
atlases written before read back unchanged) and read back with ``from_dict``; :class:`CircuitSections` holds a
unit's (``None`` where not built).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..circuits.evidence import AblationCheck

__all__ = ["Link", "InputsSection", "OutputsSection", "ClassesSection", "CircuitSections", "Section",
           "section_from_dict"]


@dataclass(frozen=True)
class Link:
    """A connection: the other unit (or class index), its weight, and where known its kernel (the expanded
    weights' spatial pattern, 4 digits), attribution and name (a class's)."""

    unit: int
    weight: float
    kernel: tuple[tuple[float, ...], ...] | None = None
    attribution: float | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"unit": self.unit, "weight": self.weight}
        if self.kernel is not None:
            out["kernel"] = [list(row) for row in self.kernel]
        if self.attribution is not None:
            out["attribution"] = self.attribution
        if self.name is not None:
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Link:
        kernel = data.get("kernel")
        return cls(int(data["unit"]), float(data["weight"]),
                   tuple(tuple(float(v) for v in row) for row in kernel) if kernel is not None else None,
                   float(data["attribution"]) if data.get("attribution") is not None else None,
                   str(data["name"]) if data.get("name") is not None else None)


def _links(rows: Sequence[Mapping[str, Any]]) -> tuple[Link, ...]:
    return tuple(Link.from_dict(r) for r in rows)


def _dicts(links: Sequence[Link]) -> list[dict[str, object]]:
    return [link.to_dict() for link in links]


@dataclass(frozen=True)
class InputsSection:
    """What drives the unit from ``source``: the top exciting and inhibiting inputs by expanded weight, the top
    inputs by attribution on its exemplars, how much the two agree, a note when they do not, the ablation check."""

    kind: ClassVar[str] = "inputs"
    source: str
    kernel_size: tuple[int, int]
    exemplars: int
    excite: tuple[Link, ...]
    inhibit: tuple[Link, ...]
    attribution: tuple[Link, ...]
    agreement: float
    note: str | None
    ablation: AblationCheck | None

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "kernel_size": list(self.kernel_size), "exemplars": self.exemplars,
                "inputs": {"excite": _dicts(self.excite), "inhibit": _dicts(self.inhibit),
                           "attribution": _dicts(self.attribution)},
                "agreement": self.agreement, "note": self.note,
                "ablation": self.ablation.to_dict() if self.ablation is not None else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputsSection:
        inputs, ablation = data["inputs"], data.get("ablation")
        kh, kw = data["kernel_size"]
        return cls(str(data["source"]), (int(kh), int(kw)), int(data["exemplars"]), _links(inputs["excite"]),
                   _links(inputs["inhibit"]), _links(inputs.get("attribution") or ()), float(data["agreement"]),
                   data.get("note"), AblationCheck.from_dict(ablation) if ablation is not None else None)


@dataclass(frozen=True)
class OutputsSection:
    """Where the unit goes in ``layer`` (the next built layer): the units it excites and inhibits most."""

    kind: ClassVar[str] = "outputs"
    layer: str
    excite: tuple[Link, ...]
    inhibit: tuple[Link, ...]

    def to_dict(self) -> dict[str, object]:
        return {"layer": self.layer, "excite": _dicts(self.excite), "inhibit": _dicts(self.inhibit)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OutputsSection:
        return cls(str(data["layer"]), _links(data["excite"]), _links(data["inhibit"]))


@dataclass(frozen=True)
class ClassesSection:
    """The classes the unit promotes and suppresses most (the linearized direct effect on the logits)."""

    kind: ClassVar[str] = "classes"
    promoted: tuple[Link, ...]
    suppressed: tuple[Link, ...]

    def to_dict(self) -> dict[str, object]:
        return {"promoted": _dicts(self.promoted), "suppressed": _dicts(self.suppressed)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassesSection:
        return cls(_links(data["promoted"]), _links(data["suppressed"]))


Section = InputsSection | OutputsSection | ClassesSection
_KINDS: dict[str, type[InputsSection] | type[OutputsSection] | type[ClassesSection]] = {
    "inputs": InputsSection, "outputs": OutputsSection, "classes": ClassesSection}


def section_from_dict(kind: str, data: Mapping[str, Any]) -> Section:
    """The section of ``kind`` (``inputs``, ``outputs``, ``classes``) from its stored JSON."""
    return _KINDS[kind].from_dict(data)


@dataclass(frozen=True)
class CircuitSections:
    """A unit's circuit sections in the atlas (``None`` each where not built)."""

    inputs: InputsSection | None = None
    outputs: OutputsSection | None = None
    classes: ClassesSection | None = None

    def __bool__(self) -> bool:
        return any(s is not None for s in (self.inputs, self.outputs, self.classes))

    def to_dict(self) -> dict[str, object]:
        return {kind: None if s is None else s.to_dict()
                for kind, s in (("inputs", self.inputs), ("outputs", self.outputs), ("classes", self.classes))}
