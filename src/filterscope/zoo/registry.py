"""The model registry and the loaded-model record.

``register_model`` adds a builder under a unique name; ``load_model(name, weights=...)`` builds it,
loads its weights and returns a :class:`LoadedModel`: the frozen ``nn.Module`` in eval mode together
with the preprocessing, class names and weights source that belong to it (as torchvision ties
transforms to weights, and timm attaches a ``pretrained_cfg``). Any other ``nn.Module`` enters through
:func:`wrap_model`.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ..errors import DeviceError, UnknownModelError, WeightsError, did_you_mean
from .preprocessing import Preprocessing
from .weights import PackageWeights, UrlWeights, load_state_dict_into, read_state_dict

__all__ = [
    "LoadedModel",
    "ModelSpec",
    "register_model",
    "list_models",
    "get_model_spec",
    "load_model",
    "wrap_model",
    "imagenet_categories",
    "resolve_device",
    "coerce_model",
]


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


@dataclass(frozen=True)
class LoadedModel:
    """A frozen network with everything needed to feed and read it.

    Attributes:
        name: Registry name, or the name given to :func:`wrap_model`.
        module: The network, in eval mode, every parameter with ``requires_grad=False``.
        preprocessing: Input size, resize/crop and normalization of this network.
        weights: Where the weights came from, in words (a package, a file, ``random (seed 0)``).
        categories: Class names of the output logits, when known.
        info: Free-form extras (e.g. which implementation was used).
    """

    name: str
    module: nn.Module
    preprocessing: Preprocessing
    weights: str
    categories: tuple[str, ...] | None = None
    info: dict[str, str] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        for tensor in self.module.parameters():
            return tensor.device
        for tensor in self.module.buffers():
            return tensor.device
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> LoadedModel:
        """The same model on ``device`` ("cpu", "cuda", "cuda:1", "auto")."""
        self.module.to(resolve_device(device))
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for ``(B,3,H,W)`` images in [0, 1] (normalized here)."""
        return self.module(self.preprocessing.normalize(images))


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` → cuda when available, else cpu; a CUDA device on a machine without CUDA is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise DeviceError(f"Unknown device {str(device)!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"Device {str(device)!r} asked for, but CUDA is not available on this machine "
                              "(use --device cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"Device {str(device)!r} does not exist: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    return dev


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, *, preprocessing: Preprocessing, weights: PackageWeights | UrlWeights,
                   description: str) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Decorator: register a builder of an untrained network under ``name`` (unique)."""

    def decorator(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"A model named {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name, build, preprocessing, weights, description)
        return build

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the fnmatch ``pattern`` (``"*resnet*"``), sorted."""
    def natural(name: str) -> list[int | str]:  # resnet18 before resnet101
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]

    return sorted((n for n in _REGISTRY if fnmatch.fnmatch(n, pattern)), key=natural)


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"Unknown model {name!r}.{did_you_mean(name, _REGISTRY)} List models with: filterscope models"
        ) from None


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


def load_model(name: str, weights: str | Path | None = None, *, seed: int = 0, device: str | torch.device = "cpu",
               progress: bool = False) -> LoadedModel:
    """Build a registered model and load its weights.

    Args:
        name: A name from :func:`list_models`.
        weights: ``None`` or ``"default"`` for the model's own weights (package, hub cache or download),
            ``"random"`` for the untrained network initialized from ``seed``, or a path to a state dict
            or checkpoint file.
        seed: Seed of the random initialization (only matters with ``weights="random"``).
        device: Where the model lives: "cpu", "cuda", "cuda:N" or "auto".
        progress: Show a download progress bar on stderr.

    Returns:
        The frozen model with its preprocessing.

    Raises:
        UnknownModelError: ``name`` is not registered.
        WeightsError: the weights cannot be found, downloaded, verified or do not fit.
    """
    spec = get_model_spec(name)
    dev = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = spec.build()
    info = {"implementation": f"{type(module).__module__}.{type(module).__qualname__}"}
    if weights is not None and str(weights) == "random":
        source = f"random (seed {seed})"
    else:
        if weights is None or str(weights) == "default":
            state_dict, source = spec.weights.fetch(name, progress=progress)
        else:
            if not Path(weights).is_file():
                raise WeightsError(f"Weights file not found: {weights} (--weights takes 'default', 'random' "
                                   "or the path of a state-dict file)")
            state_dict, source = read_state_dict(weights), f"file {Path(weights)}"
        load_state_dict_into(module, state_dict, name, source)
    return LoadedModel(
        name=name,
        module=_freeze(module).to(dev),
        preprocessing=spec.preprocessing,
        weights=source,
        categories=imagenet_categories() if spec.imagenet else None,
        info=info,
    )


def wrap_model(module: nn.Module, *, name: str = "custom", preprocessing: Preprocessing | None = None,
               categories: tuple[str, ...] | None = None, weights: str = "user module") -> LoadedModel:
    """Use any ``nn.Module`` (``(B,3,H,W)`` normalized input) with filterscope.

    The module is put in eval mode and its parameters stop requiring gradients (in place).
    ``preprocessing`` defaults to 224 px input with ImageNet normalization: pass your own.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"wrap_model needs a torch.nn.Module, not {type(module).__name__}")
    return LoadedModel(name=name, module=_freeze(module), preprocessing=preprocessing or Preprocessing(),
                       weights=weights, categories=categories)


def coerce_model(model: LoadedModel | nn.Module) -> LoadedModel:
    """A :class:`LoadedModel` as it is; a bare module through :func:`wrap_model`."""
    if isinstance(model, LoadedModel):
        return model
    return wrap_model(model)

