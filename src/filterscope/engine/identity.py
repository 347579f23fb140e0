"""What makes two renders "the same image": one definition, used by ``visualize`` resume and by the atlas.

A render's identity is a :class:`RenderIdentity`: the network's **weights fingerprint** (SHA-256 of its
state, :func:`~filterscope.zoo.weights.weights_fingerprint`: the same weights from another file are the
same), the **objective** (its description; for one unit also its layer and unit), the **recipe** (its JSON),
the **seed**, which **copy** of the objective it is, and the **requested runtime settings**
(:class:`RenderSettings`: device, precision as asked for, memory format). Its :attr:`~RenderIdentity.key`
(SHA-256) is what both compare: an image whose key matches is reused, never rendered again.

The precision is the one *requested* (``fp32``, ``bf16`` or ``auto``), not the one ``auto`` resolved to:
an identity must be known before any work is done (the atlas plans every render before it probes the
hardware) and must not change when a resumed run on another machine would resolve ``auto`` otherwise.
So ``--precision fp32`` and ``--precision bf16`` images are never taken for each other, and neither is
taken for an ``auto`` one; the precision actually used is provenance, recorded beside the image (PNG
``precision`` and ``precision_choice``), not identity. Thread count and batch size are not identity
either: in fp32 they change an image only by float rounding.

Keys of one-unit objectives are those atlases recorded before this module existed (same fields, same
order), so existing atlases keep their renders.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ..runtime.core import Runtime
from ..zoo.model import LoadedModel
from .objectives import Channel, Objective
from .recipes import Recipe

__all__ = ["RenderIdentity", "RenderSettings"]


@dataclass(frozen=True)
class RenderSettings:
    """The runtime settings that are part of a render's identity (see the module docstring).

    Attributes:
        device: ``cpu``, ``cuda:0``, ...
        precision: As requested: ``fp32``, ``bf16`` or ``auto``.
        memory_format: ``channels_last`` or ``nchw`` (what the runtime will use for this module).
    """

    device: str
    precision: str
    memory_format: str

    @classmethod
    def of(cls, model: LoadedModel, runtime: Runtime) -> RenderSettings:
        return cls(str(model.device), runtime.precision,
                   "channels_last" if runtime.wants_channels_last(model.module) else "nchw")

    def to_dict(self) -> dict[str, str]:
        return {"device": self.device, "precision": self.precision, "memory_format": self.memory_format}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RenderSettings:
        data = json.loads(text)
        return cls(str(data["device"]), str(data["precision"]), str(data["memory_format"]))


@dataclass(frozen=True)
class RenderIdentity:
    """One render's identity (see the module docstring); :attr:`key` is its SHA-256."""

    weights: str
    objective: str
    recipe: str
    seed: int
    settings: RenderSettings
    layer: str | None = None
    unit: int | None = None
    copy: int = 0

    @classmethod
    def of(cls, weights_hash: str, objective: Objective, recipe: Recipe, seed: int, settings: RenderSettings,
           copy: int = 0) -> RenderIdentity:
        """The identity of rendering ``objective`` (resolved or not) with these inputs; ``copy``: which
        of ``render(..., copies=N)``'s images of it."""
        layer, unit = (str(objective.layer), int(objective.channel)) if isinstance(objective, Channel) else (None, None)
        return cls(weights_hash, objective.description, recipe.to_json(), int(seed), settings, layer, unit, copy)

    @property
    def key(self) -> str:
        fields: list[object] = [self.weights, self.layer, self.unit, self.objective, self.recipe, self.seed,
                                self.settings.to_dict()]
        if self.copy:  # left out for the first copy: the atlas's keys (one image per unit) stay as they were
            fields.append(self.copy)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
