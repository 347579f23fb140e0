"""Errors raised by filterscope.

Every error a user can cause by bad input is a :class:`FilterscopeError`. Its message is one line
that says what is wrong, the closest valid choice where there is one, and how to list the choices.
The CLI prints that line and exits with status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "FilterscopeError",
    "UnknownModelError",
    "UnknownLayerError",
    "ChannelError",
    "InvalidObjectiveError",
    "InvalidRecipeError",
    "ImageError",
    "RegionError",
    "WeightsError",
    "DeviceError",
    "RuntimeSettingError",
    "InvalidOptionError",
    "ModelInputError",
    "OutputError",
    "AtlasError",
    "ArgumentTypeError",
    "did_you_mean",
]


class FilterscopeError(Exception):
    """Base class of every error caused by bad input or a missing resource."""


class UnknownModelError(FilterscopeError, LookupError):
    """A model name that is not in the registry."""


class UnknownLayerError(FilterscopeError, LookupError):
    """A layer name or index path that does not resolve to a module of the model."""


class ChannelError(FilterscopeError, IndexError):
    """A channel (filter) index outside the layer's range."""


class InvalidObjectiveError(FilterscopeError, ValueError):
    """An objective that cannot be built or evaluated."""


class InvalidRecipeError(FilterscopeError, ValueError):
    """A recipe with an impossible setting (negative steps, a size below 1, ...)."""


class ImageError(FilterscopeError, OSError):
    """An image that cannot be read or used."""


class RegionError(FilterscopeError, ValueError):
    """An occlusion region that is malformed, empty, or outside the image."""


class WeightsError(FilterscopeError, OSError):
    """Weights that cannot be found, downloaded, verified or loaded."""


class DeviceError(FilterscopeError, RuntimeError):
    """A device that is not available on this machine."""


class RuntimeSettingError(FilterscopeError, ValueError):
    """A runtime setting that is malformed or that the machine cannot meet (a memory budget too small
    for one image, a precision the device lacks)."""


class InvalidOptionError(FilterscopeError, ValueError):
    """An option outside its valid choices (a fit mode, a preprocessing field, a batch size)."""


class ModelInputError(FilterscopeError, RuntimeError):
    """A model that fails on the input its preprocessing describes (wrong channel count or size)."""


class OutputError(FilterscopeError, OSError):
    """An output path that cannot be written (a file where a folder is needed, no permission, too long)."""


class ArgumentTypeError(FilterscopeError, TypeError):
    """An argument of the Python API of the wrong type: the message names the argument and what it takes."""


class AtlasError(FilterscopeError, OSError):
    """A folder that is not a readable atlas (missing, foreign, corrupt, or from a newer filterscope), or a
    request for something the atlas does not hold."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean 'a', 'b'?"`` for the closest choices, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + ", ".join(f"'{c}'" for c in close) + "?"
