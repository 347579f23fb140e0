"""A model's preprocessing from the metadata other libraries attach to it: timm's ``pretrained_cfg`` and
torchvision's weights enums and their ``transforms()`` presets.

Neither library is imported: both conventions are plain attributes (a dict on a timm model; ``crop_size``,
``resize_size``, ``mean``, ``std`` and ``interpolation`` on torchvision's ``ImageClassification`` preset;
``transforms()`` and ``meta["categories"]`` on a weights enum), read by duck typing, so that a module from
either works where they import and the tests run where they do not. The arithmetic is each library's own:
timm resizes the shorter side to ``floor(side / crop_pct)`` before its center crop (``transforms_factory``),
torchvision's preset resizes it to ``resize_size`` and crops ``crop_size``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ArgumentTypeError, InvalidOptionError
from .preprocessing import Preprocessing

__all__ = ["from_timm_config", "from_torchvision", "resolve_preprocessing"]


def from_timm_config(config: Mapping[str, Any]) -> Preprocessing:
    """The evaluation preprocessing timm's ``resolve_data_config`` and ``create_transform`` make from a
    ``pretrained_cfg``: ``input_size`` ``(C, H, W)``, ``crop_pct``, ``crop_mode``, ``interpolation``, ``mean``,
    ``std``."""
    try:
        _, height, width = (int(v) for v in config["input_size"])
        mean, std = tuple(float(v) for v in config["mean"]), tuple(float(v) for v in config["std"])
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidOptionError(f"timm's pretrained_cfg needs input_size (C, H, W), mean and std: {error}") from None
    crop_pct = float(config.get("crop_pct") or 0.875)
    scaled = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    # a square center crop resizes the shorter side; a non-square input, or timm's "squash", resizes to exactly that
    square = height == width and config.get("crop_mode", "center") != "squash"
    resize: int | tuple[int, int] = scaled[0] if square else scaled
    interpolation = str(config.get("interpolation") or "bilinear")
    return Preprocessing(input_size=height if height == width else (height, width), resize_size=resize,
                         mean=mean, std=std, interpolation="bilinear" if interpolation == "random" else interpolation)


def from_torchvision(transforms: Any) -> tuple[Preprocessing, tuple[str, ...] | None]:
    """A weights enum (``ResNet34_Weights.IMAGENET1K_V1``: its ``transforms()`` and class names) or the preset
    its ``transforms()`` returns (``crop_size``, ``resize_size``, ``mean``, ``std``, ``interpolation``)."""
    categories = None
    if callable(getattr(transforms, "transforms", None)):
        categories = tuple(getattr(transforms, "meta", {}).get("categories") or ()) or None
        transforms = transforms.transforms()
    try:
        crop, resize = _side(transforms.crop_size), _side(transforms.resize_size)
        preprocessing = Preprocessing(input_size=crop, resize_size=resize, mean=tuple(transforms.mean),
                                      std=tuple(transforms.std), interpolation=transforms.interpolation)
    except AttributeError as error:
        raise ArgumentTypeError(f"preprocessing must be an fs.Preprocessing, torchvision weights or their "
                                f"transforms(), or timm's pretrained_cfg, not {type(transforms).__name__} "
                                f"({error})") from None
    return preprocessing, categories


def _side(value: int | Sequence[int]) -> int | tuple[int, int]:
    """torchvision writes sizes as lists: ``[224]`` is a side, ``[224, 256]`` is ``(height, width)``."""
    if isinstance(value, Sequence):
        return int(value[0]) if len(value) == 1 else (int(value[0]), int(value[1]))
    return int(value)


def resolve_preprocessing(module: Any, preprocessing: Any) -> tuple[Preprocessing, tuple[str, ...] | None]:
    """What ``wrap_model`` runs a module with, and the class names that came with it: an
    :class:`Preprocessing` as it is; torchvision's weights or presets, or timm's config (a mapping), converted;
    without one, the module's own ``pretrained_cfg`` (timm) if it has one, else 224 px ImageNet defaults."""
    if isinstance(preprocessing, Preprocessing):
        return preprocessing, None
    if isinstance(preprocessing, Mapping):
        return from_timm_config(preprocessing), None
    if preprocessing is not None:
        return from_torchvision(preprocessing)
    config = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None)
    if isinstance(config, Mapping) and "input_size" in config:
        return from_timm_config(config), None
    return Preprocessing(), None
