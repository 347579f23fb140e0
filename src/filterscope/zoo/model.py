"""The loaded-model record: a frozen network with its preprocessing, class names and weights source.

:class:`LoadedModel` is what every part of filterscope runs (as torchvision ties transforms to weights, and
timm attaches a ``pretrained_cfg``). Registered models come from :func:`filterscope.zoo.load_model`; any other
``nn.Module`` enters through :func:`wrap_model`, which never changes it: whatever runs the network does so
inside :func:`frozen`, which puts the module in eval mode with frozen weights and restores every module's
``training`` flag and every parameter's ``requires_grad`` afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..arguments import checked
from ..errors import ArgumentTypeError, DeviceError, InvalidOptionError
from .conventions import resolve_preprocessing
from .preprocessing import Preprocessing
from .weights import WeightsSource

__all__ = ["LoadedModel", "wrap_model", "coerce_model", "frozen", "freeze", "resolve_device", "check_seed",
           "MAX_SEED"]


@dataclass(frozen=True)
class LoadedModel:
    """A frozen network with everything needed to feed and read it.

    Attributes:
        name: Registry name, or the name given to :func:`wrap_model`.
        module: The network. Models from :func:`load_model` are frozen (eval mode, no parameter requires
            gradients); a module given to :func:`wrap_model` stays as its owner keeps it, and is frozen
            only while filterscope runs it (:func:`frozen`).
        preprocessing: Input size, resize/crop and normalization of this network.
        weights: Where the weights came from (:class:`~filterscope.zoo.weights.WeightsSource`; ``str()`` says it
            in words: a package, a file, ``random (seed 0)``).
        categories: Class names of the output logits, when known.
        info: Free-form extras (e.g. which implementation was used).
    """

    name: str
    module: nn.Module
    preprocessing: Preprocessing
    weights: WeightsSource
    categories: tuple[str, ...] | None = None
    info: dict[str, str] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        for tensor in self.module.parameters():
            return tensor.device
        for buffer in self.module.buffers():
            return buffer.device
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> LoadedModel:
        """The same model on ``device`` ("cpu", "cuda", "cuda:1", "auto")."""
        self.module.to(resolve_device(device))
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for ``(B,C,H,W)`` images in [0, 1] (normalized here), with the module frozen."""
        with frozen(self.module):
            return self.module(self.preprocessing.normalize(images))


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` → cuda when available, else cpu; a CUDA device on a machine without CUDA is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise DeviceError(f"Unknown device {str(device)!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type not in ("cpu", "cuda"):
        raise DeviceError(f"Device {str(device)!r} is not supported: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"Device {str(device)!r} asked for, but CUDA is not available on this machine "
                              "(use --device cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"Device {str(device)!r} does not exist: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    return dev


MAX_SEED = 2**63 - 1


def check_seed(seed: int) -> int:
    """``seed`` if it is a whole number torch can seed with (0 to 2**63 - 1); a one-line error otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidOptionError(f"Seed must be a whole number from 0 to {MAX_SEED} (got {seed!r})")
    return seed


def freeze(module: nn.Module) -> nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode with no parameter requiring gradients, for the duration; every
    submodule's ``training`` flag and every parameter's ``requires_grad`` are restored afterwards.

    This is how filterscope runs a network it was lent: batch-norm statistics are not updated, no
    gradient is computed for the weights, and the caller gets the module back as it gave it.
    """
    modes = [(m, m.training) for m in module.modules()]
    grads = [(p, p.requires_grad) for p in module.parameters()]
    if any(training for _, training in modes):
        module.eval()
    if any(g for _, g in grads):
        module.requires_grad_(False)
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in grads:
            p.requires_grad_(requires_grad)


@checked
def wrap_model(module: nn.Module, *, name: str = "custom", preprocessing: Preprocessing | Any | None = None,
               categories: tuple[str, ...] | None = None,
               weights: str | WeightsSource = "user module") -> LoadedModel:
    """Use any ``nn.Module`` (``(B,C,H,W)`` normalized input) with filterscope.

    The module is not changed: filterscope runs it in eval mode with frozen weights (:func:`frozen`) and
    gives it back as it was, training mode and ``requires_grad`` flags included.

    ``preprocessing`` is an :class:`Preprocessing`, or what the module's library describes it with:
    torchvision's weights (``ResNet34_Weights.IMAGENET1K_V1``, whose class names come along) or their
    ``transforms()``, or timm's ``pretrained_cfg``. Without one, a timm model's own ``pretrained_cfg`` is
    used, and otherwise 224 px input with ImageNet normalization: pass your own.
    """
    source = weights if isinstance(weights, WeightsSource) else WeightsSource.module(weights)
    resolved, names = resolve_preprocessing(module, preprocessing)
    return LoadedModel(name=name, module=module, preprocessing=resolved, weights=source,
                       categories=categories or names)


def coerce_model(model: LoadedModel | nn.Module) -> LoadedModel:
    """A :class:`LoadedModel` as it is; a bare module through :func:`wrap_model`; anything else is an
    :class:`~filterscope.errors.ArgumentTypeError` naming the argument."""
    if isinstance(model, LoadedModel):
        return model
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"model must be a model from fs.load_model or fs.wrap_model, or a torch.nn.Module, "
                                f"not {type(model).__name__}")
    return wrap_model(model)

