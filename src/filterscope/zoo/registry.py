"""The model registry: architectures registered by name, built and given their weights.

``register_model`` adds a builder under a unique name (a duplicate is an error, as torchvision's
``register_model``); :func:`load_registered` builds one, loads its weights and returns a
:class:`~filterscope.zoo.model.LoadedModel`. Users call :func:`filterscope.zoo.load_model`, which also takes
models from files, modules and plugins (:mod:`.sources`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ..arguments import checked
from ..errors import UnknownModelError, WeightsError
from ..registry import Registry
from .calibration import calibrate as calibrate_batchnorm
from .model import LoadedModel, check_seed, freeze, resolve_device
from .preprocessing import Preprocessing
from .weights import PackageWeights, UrlWeights, WeightsSource, load_state_dict_into, read_state_dict

__all__ = ["ModelSpec", "register_model", "list_models", "get_model_spec", "load_registered", "imagenet_categories",
           "MODELS"]


@functools.cache
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, index = class id."""
    text = resources.files("filterscope.zoo").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: how to build it, its default weights and preprocessing."""

    name: str
    build: Callable[[], nn.Module]
    preprocessing: Preprocessing
    weights: PackageWeights | UrlWeights
    description: str
    imagenet: bool = True


MODELS: Registry[ModelSpec] = Registry("model", UnknownModelError, "filterscope models")

@checked
def register_model(name: str, *, preprocessing: Preprocessing, weights: PackageWeights | UrlWeights,
                   description: str) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Decorator: register a builder of an untrained network under ``name`` (unique)."""

    def decorator(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        MODELS.add(name, ModelSpec(name, build, preprocessing, weights, description))
        return build

    return decorator


@checked
def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the fnmatch ``pattern`` (``"*resnet*"``), sorted."""
    return MODELS.names(pattern)


def get_model_spec(name: str) -> ModelSpec:
    """The registered :class:`ModelSpec` called ``name``; :class:`UnknownModelError` if none."""
    return MODELS.get(name)


def load_registered(name: str, weights: str | os.PathLike[str] | None = None, *, seed: int = 0,
                    device: str | torch.device = "cpu", progress: bool = False, calibrate: bool = True) -> LoadedModel:
    """Build a registered model and load its weights.

    Args:
        name: A name from :func:`list_models`.
        weights: ``None`` or ``"default"`` for the model's own weights (package, hub cache or download),
            ``"random"`` for the untrained network initialized from ``seed``, or a path to a state dict
            or checkpoint file.
        seed: Seed of the random initialization (only matters with ``weights="random"``).
        device: Where the model lives: "cpu", "cuda", "cuda:N" or "auto".
        progress: Show a download progress bar on stderr.
        calibrate: For ``weights="random"``: re-estimate the batch-norm statistics on the reference photos
            (seeded by ``seed``; :mod:`~filterscope.zoo.calibration`), so that the network is alive. ``False``
            leaves the defaults, with which activations vanish with depth (kept to reload old records).

    Returns:
        The frozen model with its preprocessing.

    Raises:
        UnknownModelError: ``name`` is not registered.
        WeightsError: the weights cannot be found, downloaded, verified or do not fit.
    """
    spec = get_model_spec(name)
    dev = resolve_device(device)
    check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = spec.build()
    info = {"implementation": f"{type(module).__module__}.{type(module).__qualname__}"}
    if weights is not None and str(weights) == "random":
        source = WeightsSource.random(seed)
        views = calibrate_batchnorm(module, spec.preprocessing, seed) if calibrate else 0
        if views:
            source = WeightsSource.random(seed, views)
    else:
        if weights is None or str(weights) == "default":
            state_dict, text = spec.weights.fetch(name, progress=progress)
            source = WeightsSource.default(text)
        else:
            if not Path(weights).is_file():
                raise WeightsError(f"Weights file not found: {weights} (--weights takes 'default', 'random' "
                                   "or the path of a state-dict file)")
            state_dict, source = read_state_dict(weights), WeightsSource.file(weights)
        load_state_dict_into(module, state_dict, name, str(source))
    return LoadedModel(
        name=name,
        module=freeze(module).to(dev),
        preprocessing=spec.preprocessing,
        weights=source,
        categories=imagenet_categories() if spec.imagenet else None,
        info=info,
    )


