"""Named recipes, and recipes from files.

* ``paper``: the paper's schedule, pixels, no transforms (the default; see :mod:`filterscope.render`).
* ``lucid``: Lucid/Lucent's ``render_vis`` defaults: spectral parameterization with 1/f scaling and
  decorrelated color through a sigmoid, the standard transform stack (pad 12, jitter 8 + 4, scale
  0.9–1.1, rotate ±10°), Adam lr 0.05, 512 steps at one size (224 px here, the model's input).
* ``filterscope``: our own: ``lucid``'s parameterization and transforms with the paper's idea of growing
  the image: 128 steps at 160 px, then the logits upscaled to 224 px and 160 more steps, for less than half
  of ``lucid``'s compute. benchmarks/quality.py compares the three (it does not beat ``lucid`` on
  robustness at that cost: see benchmarks/RESULTS.md).

A recipe file is JSON or TOML with any :class:`~filterscope.render.Recipe` fields, optionally starting
from a named recipe with ``base``: ``{"base": "lucid", "steps": 256}``.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

from .errors import InvalidRecipeError, did_you_mean
from .render import PAPER_RECIPE, Recipe
from .transforms import LUCID_TRANSFORMS

__all__ = ["RECIPES", "get_recipe", "list_recipes"]

RECIPES: dict[str, Recipe] = {
    "paper": PAPER_RECIPE,
    "lucid": Recipe(name="lucid", size=224, scales=1, steps=512, lr=0.05, weight_decay=0.0, blur=0, param="fft",
                    decorrelate=True, transforms=LUCID_TRANSFORMS),
    "filterscope": Recipe(name="filterscope", size=160, scales=2, upscale=1.4, steps=128, late_steps_factor=1.25,
                          lr=0.05, weight_decay=0.0, blur=0, param="fft", decorrelate=True,
                          transforms=LUCID_TRANSFORMS),
}


def list_recipes() -> list[str]:
    return list(RECIPES)


def get_recipe(name_or_path: str | os.PathLike[str]) -> Recipe:
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
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRecipeError(f"Cannot read recipe file {path}: {exc}") from None
    if not isinstance(values, dict):
        raise InvalidRecipeError(f"Recipe file {path} must hold an object of recipe fields")
    base = get_recipe(values.pop("base", "paper"))
    merged = {**base.to_dict(), "name": path.stem, **values}
    return Recipe.from_dict(merged)
