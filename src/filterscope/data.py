"""Reference photos that ship with the dependencies (no download): scikit-image's natural images.

They are the natural-image statistics filterscope needs offline: the magnitude spectrum MACO fixes
(:mod:`filterscope.params`) and the default reference set of the quality scores
(:mod:`filterscope.metrics`). This module imports nothing of filterscope.
"""

from __future__ import annotations

import functools

from PIL import Image

__all__ = ["NATURAL_IMAGES", "natural_images"]

# Photos shipped inside scikit-image: people, animals, objects, textures, a telescope field.
NATURAL_IMAGES = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "brick", "grass", "gravel",
                  "hubble_deep_field")


@functools.cache
def natural_images() -> tuple[Image.Image, ...]:
    """The photos of :data:`NATURAL_IMAGES` as RGB PIL images (loaded once)."""
    from skimage import data  # imported here: scikit-image is slow to import and most runs never need it

    return tuple(Image.fromarray(getattr(data, name)()).convert("RGB") for name in NATURAL_IMAGES)
