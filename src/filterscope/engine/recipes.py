"""Recipes: the numbers of the multi-scale activation-maximization schedule, as plain data.

A :class:`Recipe` is serializable configuration (``to_dict``/``from_dict``, recorded in every PNG): it
*names* its parameterization (a key of :data:`filterscope.params.PARAMS`) and its transforms (a
:class:`~filterscope.transforms.Transform`, written as a preset name or ``{"kind": ..., ...}``); the
render loop (:mod:`filterscope.render`) turns it into the objects that run. Its defaults reproduce the
paper's code (Amirli 2021, section 2):

====================  =========  ============================================================
field                 default    meaning
====================  =========  ============================================================
size                  56         side of the starting noise image, px
scales                12         optimization scales: 56, 67, 80, 96, 115, 138, 165, 198, 237,
                                 284, 340, 408 (each ``int(previous * upscale)``)
upscale               1.2        factor between scales (bicubic)
steps                 20         Adam steps per scale in the first half of the scales
late_steps_factor     1.3        later scales run ``int(steps * factor)`` = 26 steps
lr                    0.1        Adam learning rate
weight_decay          1e-6       Adam weight decay. The paper's text says 1e-2; the authors' code
                                 uses this value, and so do we
blur                  5          box blur (px, odd; 0 = none) applied after each upscaling
blur_kind             box        box (the paper's) or gaussian (same kernel, the box's variance)
blur_every            0          also blur every N steps within a scale (0 = never; not the paper)
lr_end                1.0        cosine decay of the learning rate within each scale, to ``lr * lr_end``
                                 at its last step (1 = constant, the paper's)
warmup                0          linear learning-rate warm-up over the first N steps of each scale
transform_copies      1          transformed copies of each image per step, their objective averaged
                                 (expectation over transformations; each copy is a network pass)
tiles                 1          the image is tiles x tiles copies of one optimized tile: a periodic
                                 texture, each tile pixel driven by the gradient of all its copies
noise_mean/amplitude  128, 20    start image ``(U(0,1)*20 + 128)/255``
param                 pixel      parameterization: pixel, fft, maco or cppn (see :mod:`filterscope.params`)
decorrelate           False      fft: optimize in decorrelated color space
fft_decay             1.0        fft: spectrum scaled by 1/f^decay
transforms            none       random pad/jitter/scale/rotate before each forward pass
tv, l1, l2            0          penalty weights: total variation, distance from mid-gray
relu_override_steps   0          Lucid's redirected ReLU gradient for the first N steps, so that units
                                 that are 0 on the starting noise can rise (see filterscope.gradients);
                                 it runs only for a batch with such a unit (elsewhere it changes nothing)
reference_size        224        the input side the pixel numbers above are written for: for a model
                                 whose input is H x W each size becomes ``round(size * H / 224)`` by
                                 ``round(size * W / 224)`` (blur, padding and jitter alike); ``None``:
                                 absolute pixels whatever the model
name                  paper      a label (named recipes: :mod:`filterscope.recipes`)
====================  =========  ============================================================

The named recipes:

* ``paper``: the paper's schedule, pixels, no transforms (the default).
* ``lucid``: Lucid/Lucent's ``render_vis`` defaults: spectral parameterization with 1/f scaling and
  decorrelated color through a sigmoid, the standard transform stack (pad 12, jitter 8 + 4, scale
  0.9–1.1, rotate ±10°), Adam lr 0.05 on a spectrum Lucid divides by 4 (lr 0.0125 on ours, the same
  steps; earlier versions of this recipe used 0.05 here, 4x Lucid's step), 512 steps at one size
  (224 px here, the model's input), and
  Lucid's redirected ReLU gradient (for the first 16 steps: throughout, it doubled the time and changed
  no score on Lite0).
* ``filterscope``: our own, at a quarter of ``lucid``'s time: ``lucid``'s parameterization, 128 steps
  at 224 px with Adam lr 0.02, and the transforms the robustness score draws from (``small``: ±8 %
  shifts, 0.9–1.1 scale, ±10°, reflected borders, no padding); the redirected ReLU gradient for the
  first 16 steps. benchmarks/quality.py compares the recipes and benchmarks/recipe_variants.py the 30
  variants this one was chosen from (neither a lower or higher learning rate, a schedule, several scales,
  tiles, transformed copies nor another spectrum did better at that cost; see benchmarks/RESULTS.md).
* ``cppn``: Lucid's CPPN parameterization (each image is a small network from pixel coordinates to
  colors: smooth, resolution-free patterns) with ``lucid``'s transforms and 512 steps, Adam lr 0.005.

A recipe file is JSON or TOML with any :class:`Recipe` fields, optionally starting from a named recipe
with ``base``: ``{"base": "lucid", "steps": 256}``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..arguments import checked
from ..errors import InvalidRecipeError, did_you_mean
from ..zoo.preprocessing import REFERENCE_SIDE
from .params import PARAMS
from .transforms import LUCID_TRANSFORMS, NO_TRANSFORMS, SMALL_TRANSFORMS, Transform, transform_from_spec

__all__ = ["Recipe", "PAPER_RECIPE", "RECIPES", "get_recipe", "list_recipes", "MAX_SIZE", "MAX_SCALES", "BLUR_KINDS",
           "LATER_FIELDS"]


@dataclass(frozen=True)
class Recipe:
    """The numbers of the multi-scale activation-maximization schedule (defaults: the paper's)."""

    size: int = 56
    scales: int = 12
    upscale: float = 1.2
    steps: int = 20
    late_steps_factor: float = 1.3
    lr: float = 0.1
    weight_decay: float = 1e-6
    blur: int = 5
    noise_mean: float = 128 / 255
    noise_amplitude: float = 20 / 255
    param: str = "pixel"
    decorrelate: bool = False
    fft_decay: float = 1.0
    transforms: Transform = NO_TRANSFORMS
    tv: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    blur_every: int = 0
    relu_override_steps: int = 0
    reference_size: int | None = REFERENCE_SIDE
    name: str = "paper"
    blur_kind: str = "box"
    lr_end: float = 1.0
    warmup: int = 0
    transform_copies: int = 1
    tiles: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.transforms, Transform):  # a preset name or a dict of options, as in files
            object.__setattr__(self, "transforms", transform_from_spec(self.transforms))
        problems = _type_problems(self)
        if problems:  # the checks below compare numbers: they need the right types first
            raise InvalidRecipeError("Invalid recipe: " + "; ".join(problems))
        if self.param not in PARAMS:
            problems.append(f"param must be one of {', '.join(PARAMS.names())} (got {self.param!r})")
        if min(self.tv, self.l1, self.l2) < 0:
            problems.append("tv, l1 and l2 must not be negative")
        if self.blur_every < 0 or (self.blur_every and self.blur < 3):
            problems.append("blur_every needs blur of at least 3 px, and must not be negative")
        if self.size < 1:
            problems.append(f"size must be at least 1 px (got {self.size})")
        if self.scales < 1:
            problems.append(f"scales must be at least 1 (got {self.scales})")
        if self.upscale < 1:
            problems.append(f"upscale must be at least 1 (got {self.upscale})")
        if self.steps < 0 or self.late_steps_factor < 0:
            problems.append("steps and late_steps_factor must not be negative")
        if self.lr <= 0:
            problems.append(f"lr must be positive (got {self.lr})")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must not be negative (got {self.weight_decay})")
        if self.blur < 0 or (self.blur > 1 and self.blur % 2 == 0):
            problems.append(f"blur must be 0 or an odd number of pixels (got {self.blur})")
        if self.blur_kind not in BLUR_KINDS:
            problems.append(f"blur_kind must be one of {', '.join(BLUR_KINDS)} (got {self.blur_kind!r})")
        if not 0 <= self.lr_end <= 1:
            problems.append(f"lr_end must be between 0 and 1 (a fraction of lr; got {self.lr_end})")
        if self.warmup < 0:
            problems.append(f"warmup must not be negative (got {self.warmup})")
        if not 1 <= self.transform_copies <= MAX_COPIES:
            problems.append(f"transform_copies must be between 1 and {MAX_COPIES} (got {self.transform_copies})")
        if not 1 <= self.tiles <= 16:
            problems.append(f"tiles must be between 1 and 16 (got {self.tiles})")
        if self.param in PARAMS and not PARAMS.get(self.param).resizable and self.blur_every:
            problems.append(f"param {self.param} has no image state to blur: blur_every must be 0")
        if self.relu_override_steps < 0:
            problems.append(f"relu_override_steps must not be negative (got {self.relu_override_steps})")
        if self.reference_size is not None and self.reference_size < 1:
            problems.append(f"reference_size must be at least 1 px or None (got {self.reference_size})")
        if self.scales > MAX_SCALES:
            problems.append(f"scales must be at most {MAX_SCALES} (got {self.scales})")
        # in logarithms: size * upscale ** (scales - 1) can overflow a float
        if not problems and math.log(self.size) + (self.scales - 1) * math.log(self.upscale) > math.log(MAX_SIZE):
            problems.append(f"the largest image would be over {MAX_SIZE} px, the most allowed (lower size, scales "
                            "or upscale)")
        if not problems:
            sizes = self.sizes()
            # the box blur pads by reflection, which needs the image wider than half the kernel
            blurred = sizes[1:] + (sizes[:1] if self.blur_every else [])
            if blurred and self.blur // 2 >= min(blurred):
                problems.append(f"blur of {self.blur} px is too large for a {min(blurred)} px image "
                                f"(at most {2 * min(blurred) - 1} px)")
        if problems:
            raise InvalidRecipeError("Invalid recipe: " + "; ".join(problems))

    def sizes(self) -> list[int]:
        """Image side at each scale: ``[56, 67, 80, ..., 408]`` for the paper's recipe."""
        sizes = [self.size]
        for _ in range(self.scales - 1):
            sizes.append(int(sizes[-1] * self.upscale))
        return sizes

    def steps_per_scale(self) -> list[int]:
        """Adam steps at each scale: ``steps`` in the first half, ``int(steps * late_steps_factor)`` after."""
        first_late = math.ceil(self.scales / 2)
        late = int(self.steps * self.late_steps_factor)
        return [self.steps if i < first_late else late for i in range(self.scales)]

    @property
    def total_steps(self) -> int:
        return sum(self.steps_per_scale())

    @property
    def output_size(self) -> int:
        return self.sizes()[-1]

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON data (the transforms as their ``to_dict()``).

        Fields added after the first release (:data:`LATER_FIELDS`) are left out while they hold their
        default, so a recipe that does not use them writes the JSON it always wrote: the PNG metadata and
        the atlas's render keys of earlier renders stay valid.
        """
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if not (f.name in LATER_FIELDS and getattr(self, f.name) == f.default)}
        values["transforms"] = self.transforms.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Recipe:
        """The recipe :meth:`to_dict` wrote (or a file holds).

        Raises:
            InvalidRecipeError: unknown fields, or values that do not fit.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidRecipeError(f"Unknown recipe field(s) {unknown}; fields are {sorted(known)}")
        try:
            return cls(**values)
        except TypeError as exc:
            raise InvalidRecipeError(f"Invalid recipe: {exc}") from None

    def scale_factors(self, input_shape: tuple[int, int]) -> tuple[float, float]:
        """``(height, width)`` factors from the recipe's pixel numbers to a model whose input is
        ``input_shape``: ``H / reference_size`` and ``W / reference_size``; ``(1, 1)`` for absolute pixels."""
        if self.reference_size is None:
            return 1.0, 1.0
        return input_shape[0] / self.reference_size, input_shape[1] / self.reference_size

    def to_json(self) -> str:
        """:meth:`to_dict` as canonical JSON (sorted keys): how PNG metadata records the recipe."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> Recipe:
        """A copy with the given fields changed; ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


MAX_SIZE = 4096
"""Largest image side a recipe may reach, px (a 4096 px image of a ResNet already needs tens of GiB)."""
MAX_SCALES = 64
MAX_COPIES = 64
BLUR_KINDS = ("box", "gaussian")
LATER_FIELDS = frozenset({"blur_kind", "lr_end", "warmup", "transform_copies", "tiles"})
"""Fields :meth:`Recipe.to_dict` writes only when they differ from their default."""


def _type_problems(recipe: Recipe) -> list[str]:
    """Fields of the wrong type, or numbers that are not finite: NaN passes every comparison."""
    problems = []
    for f in dataclasses.fields(recipe):
        value, kind = getattr(recipe, f.name), f.type
        if kind == "int | None" and value is None:
            continue
        if kind in ("int", int, "int | None"):
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"{f.name} must be a whole number (got {value!r})")
        elif kind in ("float", float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"{f.name} must be a number (got {value!r})")
            elif not math.isfinite(value):
                problems.append(f"{f.name} must be a finite number (got {value!r})")
        elif kind in ("bool", bool):
            if not isinstance(value, bool):
                problems.append(f"{f.name} must be true or false (got {value!r})")
        elif kind in ("str", str) and not isinstance(value, str):
            problems.append(f"{f.name} must be a string (got {value!r})")
    return problems


PAPER_RECIPE = Recipe()

RECIPES: dict[str, Recipe] = {
    "paper": PAPER_RECIPE,
    # Lucid's render_vis redirects ReLU gradients (relu_gradient_override=True); here for the first 16 steps,
    # where it matters: throughout, it doubled the time per filter on Lite0 and changed no score.
    # Lucid's Adam(0.05) on a spectrum whose image it divides by 4: lr 0.0125 on ours (see FourierParam)
    "lucid": Recipe(name="lucid", size=224, scales=1, steps=512, lr=0.0125, weight_decay=0.0, blur=0, param="fft",
                    decorrelate=True, transforms=LUCID_TRANSFORMS, relu_override_steps=16),
    # benchmarks/recipe_variants.py: what each choice buys (lr, transforms, steps, scales, tiles, copies, spectrum)
    "filterscope": Recipe(name="filterscope", size=224, scales=1, steps=128, lr=0.02, weight_decay=0.0, blur=0,
                          param="fft", decorrelate=True, transforms=SMALL_TRANSFORMS, relu_override_steps=16),
    # Lucid's CPPN parameterization with render_vis's schedule and transforms, and Lucid's CPPN learning rate
    "cppn": Recipe(name="cppn", size=224, scales=1, steps=512, lr=0.005, weight_decay=0.0, blur=0, param="cppn",
                   transforms=LUCID_TRANSFORMS, relu_override_steps=16),
}


@checked
def list_recipes() -> list[str]:
    """The names of the named recipes."""
    return list(RECIPES)


@checked
def get_recipe(name_or_path: str | os.PathLike[str], *, _bases: tuple[str, ...] = ()) -> Recipe:
    """A named recipe, or one read from a ``.json``/``.toml`` file.

    Raises:
        InvalidRecipeError: unknown name, unreadable file, unknown fields or impossible values.
    """
    text = str(name_or_path)
    if text in RECIPES:
        return RECIPES[text]
    path = Path(text)
    if path.suffix.lower() not in (".json", ".toml"):
        raise InvalidRecipeError(f"Unknown recipe {text!r}.{did_you_mean(text, RECIPES)} Named recipes: "
                                 f"{', '.join(RECIPES)} (or a .json/.toml file); list them with: filterscope recipes")
    if not path.is_file():
        raise InvalidRecipeError(f"Recipe file not found: {path}")
    try:
        values = tomllib.loads(path.read_text()) if path.suffix.lower() == ".toml" else json.loads(path.read_text())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidRecipeError(f"Cannot read recipe file {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(values, dict):
        raise InvalidRecipeError(f"Recipe file {path} must hold an object of recipe fields")
    base_name = values.pop("base", "paper")
    if not isinstance(base_name, str):
        raise InvalidRecipeError(f"Recipe file {path}: base must be a recipe name or file, not {base_name!r}")
    if str(path.resolve()) in _bases:
        raise InvalidRecipeError(f"Recipe file {path} is its own base (through {' → '.join(_bases)})")
    base = get_recipe(base_name, _bases=(*_bases, str(path.resolve())))
    merged = {**base.to_dict(), "name": path.stem, **values}
    return Recipe.from_dict(merged)
