"""Random transformations an image must survive: padding, jitter, scaling and rotation.

All of them are folded into **one** affine resampling per image (``affine_grid`` + ``grid_sample``),
so a stack of transforms blurs the image once, not once per stage, and stays differentiable. Each
image draws its own parameters from its own ``torch.Generator``, so the result of an image does not
depend on the other images of its batch, and one seed reproduces everything.

A transform is a :class:`Transform`: called as ``transform(images, generators)``, serialized with
``to_dict()`` (which names its registered ``kind``). :data:`TRANSFORMS` holds the kinds (``affine``,
the :class:`TransformStack`) and named presets (``none``, ``lucid``, ``small``); a recipe's ``transforms`` field is
one of them, written as a preset name or as ``{"kind": ..., options...}``. Add a kind with
:func:`register_transform`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..arguments import checked
from ..errors import InvalidRecipeError
from ..registry import Registry

__all__ = ["Transform", "TransformStack", "LUCID_TRANSFORMS", "SMALL_TRANSFORMS", "NO_TRANSFORMS", "random_affine",
           "TRANSFORMS",
           "register_transform", "transform_from_spec"]


class Transform:
    """Base of the random transforms: ``transform(images, generators) -> images``, differentiable.

    Attributes:
        kind: The name it is registered under (see :func:`register_transform`).
    """

    kind: ClassVar[str] = ""

    @property
    def active(self) -> bool:
        """False when it leaves images unchanged (the render loop then skips it)."""
        return True

    def output_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """``(height, width)`` of the transformed image for an input of ``shape`` (padding grows it)."""
        return shape

    def scaled(self, factor: float) -> Transform:
        """The transform for an image ``factor`` times the size it is written for (224 px): its pixel
        quantities (padding, jitter) scaled. By default itself."""
        return self

    def describe(self) -> str:
        """In words, for listings."""
        return self.kind if self.active else "none"

    def to_dict(self) -> dict[str, Any]:
        """Its options, with ``kind``: what :func:`transform_from_spec` reads back."""
        return {"kind": self.kind}

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> Transform:
        """Build one from its options (without ``kind``)."""
        return cls(**options)

    def __call__(self, images: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        raise NotImplementedError


TRANSFORMS: Registry[Callable[..., Transform]] = Registry("transform", InvalidRecipeError)


@checked
def register_transform(name: str) -> Callable[[type[Transform]], type[Transform]]:
    """Class decorator: register a :class:`Transform` subclass as kind ``name``."""

    def decorator(cls: type[Transform]) -> type[Transform]:
        cls.kind = name
        TRANSFORMS.add(name, cls.from_dict)
        return cls

    return decorator


def transform_from_spec(spec: object) -> Transform:
    """A transform from its recipe form: a :class:`Transform`, a registered name (``"lucid"``), or a
    mapping ``{"kind": "affine", "pad": 12, ...}`` (``kind`` defaults to ``affine``).

    Raises:
        InvalidRecipeError: an unknown kind or bad options.
    """
    if isinstance(spec, Transform):
        return spec
    if isinstance(spec, str):
        return TRANSFORMS.get(spec)({})
    if isinstance(spec, Mapping):
        options = dict(spec)
        kind = options.pop("kind", "affine")
        build = TRANSFORMS.get(kind)
        try:
            return build(options)
        except (TypeError, ValueError) as exc:
            raise InvalidRecipeError(f"Invalid options for transform {kind!r}: {exc}") from None
    raise InvalidRecipeError(f"transforms must be a name ({', '.join(TRANSFORMS.names())}) or an object of "
                             f"options, not {type(spec).__name__}")


@register_transform("affine")
@dataclass(frozen=True)
class TransformStack(Transform):
    """Pad, then a random translation, scaling and rotation per image.

    Attributes:
        pad: Constant padding on each side, px (Lucid pads 12 with gray 0.5).
        pad_value: Value of the padding, in [0, 1].
        jitter: Largest translation, px, in x and in y (Lucid jitters by 8 and later by 4: 12 in all).
        scales: Scale factors to draw from (empty: no scaling).
        angles: Rotations in degrees to draw from (empty: no rotation).
    """

    pad: int = 0
    pad_value: float = 0.5
    jitter: int = 0
    scales: tuple[float, ...] = ()
    angles: tuple[float, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.pad or self.jitter or self.scales or self.angles)

    def output_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        return shape[0] + 2 * self.pad, shape[1] + 2 * self.pad

    def scaled(self, factor: float) -> TransformStack:
        if factor == 1:
            return self
        return dataclasses.replace(self, pad=round(self.pad * factor), jitter=round(self.jitter * factor))

    def describe(self) -> str:
        if not self.active:
            return "none"
        return (f"pad {self.pad}, jitter {self.jitter}, scale {min(self.scales, default=1):g}-"
                f"{max(self.scales, default=1):g}, rotate ±{max(self.angles, default=0):g}°")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "pad": self.pad, "pad_value": self.pad_value, "jitter": self.jitter,
                "scales": list(self.scales), "angles": list(self.angles)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TransformStack:
        unknown = set(values) - {"kind", "pad", "pad_value", "jitter", "scales", "angles"}
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(map(repr, sorted(map(str, unknown))))}")
        return cls(int(values.get("pad", 0)), float(values.get("pad_value", 0.5)), int(values.get("jitter", 0)),
                   tuple(float(v) for v in values.get("scales", ())), tuple(float(v) for v in values.get("angles", ())))

    def __call__(self, images: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Transform ``(B,C,H,W)`` images; ``generators`` holds one generator per image."""
        if not self.active:
            return images
        if self.pad:
            images = F.pad(images, (self.pad,) * 4, value=self.pad_value)
        height, width = images.shape[-2:]
        shifts, scales, angles = [], [], []
        for g in generators:
            shifts.append([_uniform_int(g, self.jitter), _uniform_int(g, self.jitter)])
            scales.append(_choice(g, self.scales, 1.0))
            angles.append(_choice(g, self.angles, 0.0))
        return random_affine(images, torch.tensor(shifts, dtype=torch.float32) * 2 / torch.tensor([width, height]),
                             torch.tensor(scales), torch.tensor(angles), padding_mode="reflection")


def _uniform_int(generator: torch.Generator, limit: int) -> int:
    if limit <= 0:
        return 0
    return int(torch.randint(-limit, limit + 1, (), generator=generator))


def _choice(generator: torch.Generator, values: Sequence[float], default: float) -> float:
    if not values:
        return default
    return float(values[int(torch.randint(0, len(values), (), generator=generator))])


def random_affine(images: torch.Tensor, shifts: torch.Tensor, scales: torch.Tensor, angles: torch.Tensor,
                  padding_mode: str = "reflection") -> torch.Tensor:
    """Resample each image once: translate by ``shifts`` (``(B,2)``, in units of half the image), scale
    by ``scales`` (``(B,)``, >1 zooms in), rotate by ``angles`` (``(B,)``, degrees). Differentiable."""
    batch = images.shape[0]
    radians = angles.to(torch.float32) * math.pi / 180
    cos, sin = torch.cos(radians) / scales, torch.sin(radians) / scales
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos, -sin, shifts[:, 0]
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin, cos, shifts[:, 1]
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


NO_TRANSFORMS = TransformStack()
# Lucid's standard_transforms: pad(12), jitter(8), random_scale(0.9..1.1), random_rotate(-10..10), jitter(4).
LUCID_TRANSFORMS = TransformStack(
    pad=12, jitter=12, scales=tuple(1 + (i - 5) / 50 for i in range(11)),
    angles=tuple(float(a) for a in range(-10, 11)),
)
TRANSFORMS.add("none", lambda options: TransformStack.from_dict(options))
TRANSFORMS.add("lucid", lambda options: TransformStack.from_dict({**LUCID_TRANSFORMS.to_dict(), **options}))
# The distribution filterscope.metrics.robustness scores under: shifts up to 8 % of the side (18 px of 224),
# scale 0.9-1.1, rotation ±10°, reflected borders; no padding, so the network sees the image at its own size.
SMALL_TRANSFORMS = TransformStack(jitter=18, scales=LUCID_TRANSFORMS.scales, angles=LUCID_TRANSFORMS.angles)
TRANSFORMS.add("small", lambda options: TransformStack.from_dict({**SMALL_TRANSFORMS.to_dict(), **options}))
