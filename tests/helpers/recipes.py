"""Small recipes for fast renders in tests."""

from __future__ import annotations

import filterscope as fs
from filterscope import Recipe

SMALL = Recipe(size=16, scales=3, upscale=1.5, steps=10, late_steps_factor=1.5, reference_size=None)  # absolute px


TRUST_RECIPE = fs.get_recipe("paper").replace(size=32, scales=2, steps=20, reference_size=32)
