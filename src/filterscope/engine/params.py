"""Image parameterizations: what the optimizer actually changes.

Each is an ``nn.Module`` built **from images** ``(B,C,H,W)`` in [0, 1] (C: the model's input channels; so
every scale of the multi-scale schedule can start from the upscaled result of the previous one) whose
``forward()`` returns the images ``(B,C,H,W)``:

* :class:`PixelParam` (the paper's): the pixels themselves, in the model's normalized space; the output
  is not clipped during optimization (the paper clips once, at the end).
* :class:`FourierParam` (Lucid's spectral parameterization): the 2-D spectrum of each channel, scaled by
  ``1/f^decay`` so low frequencies move first, optionally through a color decorrelation matrix, then a
  sigmoid. Output in (0, 1).
* :class:`MacoParam` (Fel et al. 2023, "MACO"): only the Fourier **phase** is optimized; the magnitude
  spectrum is fixed to the average magnitude of natural photos (scikit-image's, see
  :mod:`filterscope.data`), which keeps the image's power spectrum natural by construction.
* :class:`CPPNParam` (Lucid's CPPN): the weights of a small network from pixel coordinates to colors;
  smooth images at any size.

They are registered in :data:`PARAMS` by name (``pixel``, ``fft``, ``maco``, ``cppn``), which is what a recipe's
``param`` field names. Add one by subclassing :class:`Param` and decorating it with
:func:`register_param`; ``options`` maps its keyword arguments to the recipe fields they come from.

**Color decorrelation.** Lucid's ``color_correlation_svd_sqrt`` matrix (the square root, via SVD, of the
3x3 RGB covariance of ImageNet images), divided by its largest column norm; optimizing in these
decorrelated coordinates moves luminance and the two opponent colors independently.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ..arguments import checked
from ..data import natural_images
from ..errors import InvalidRecipeError
from ..registry import Registry
from ..tensors import to_tensor
from ..zoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

__all__ = ["PARAMS", "Param", "register_param", "PixelParam", "FourierParam", "MacoParam", "CPPNParam", "make_param",
           "initial_state", "param_options", "optimization_units", "COLOR_CORRELATION_SVD_SQRT"]

COLOR_CORRELATION_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                           [0.27, 0.00, -0.05],
                                           [0.27, -0.09, 0.03]])
_COLOR = COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()
_EPS = 1e-4


def _to_color(t: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bchw,dc->bdhw", t, _COLOR.to(t))


def _from_color(t: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bchw,dc->bdhw", t, torch.linalg.inv(_COLOR).to(t))


def _frequencies(height: int, width: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class Param(nn.Module):
    """Base of the parameterizations: an ``nn.Module`` whose ``forward()`` returns the images ``(B,C,H,W)``.

    A parameterization is built from a *state* (``cls(state, preprocessing, **options)``); the
    multi-scale schedule resizes and blurs states between scales, ``state()`` gives the current one and
    ``set_state(state)`` writes one in place (the optimizer's moments are kept). :meth:`initial_state`
    turns images in [0, 1] into a state; by default the state is the image itself.

    Attributes:
        options: Keyword arguments of the constructor and of :meth:`initial_state`, each mapped to the
            :class:`~filterscope.recipes.Recipe` field it is read from.
    """

    options: ClassVar[dict[str, str]] = {}
    resizable: ClassVar[bool] = True
    """Whether the state is an image the schedule resizes and blurs between scales; False for a state that
    draws the image at any size (:class:`CPPNParam`), which :meth:`build` is then given the size for."""

    @classmethod
    def initial_state(cls, images: torch.Tensor, **options: Any) -> torch.Tensor:
        """The state that shows ``images`` ``(B,C,H,W)`` in [0, 1]."""
        return images

    @classmethod
    def build(cls, state: torch.Tensor, size: tuple[int, int], preprocessing: Preprocessing,
              **options: Any) -> Param:
        """The parameterization of ``state`` at ``size`` px (an image state already has that size)."""
        return cls(state, preprocessing, **options)

    def state(self) -> torch.Tensor:
        raise NotImplementedError

    def set_state(self, state: torch.Tensor) -> None:
        raise NotImplementedError


PARAMS: Registry[type[Param]] = Registry("parameterization", InvalidRecipeError)


@checked
def register_param(name: str) -> Any:
    """Class decorator: register a :class:`Param` subclass under ``name`` (a recipe's ``param``)."""
    return PARAMS.register(name)


@register_param("pixel")
class PixelParam(Param):
    """The pixels, stored in ImageNet-normalized units (the paper's parameterization).

    The paper's code optimizes the image as its ResNet sees it: ``(pixels - mean) / std`` with ImageNet's
    statistics, so Adam's step (the learning rate) is measured in those units. Here the units are
    always ImageNet's, whatever the model's own normalization (which the render loop applies
    afterwards): the optimization is a reparameterization of the same image, and a model that takes
    0-255 input or [-1, 1] input is optimized exactly like one that takes ImageNet-normalized input.
    For the paper's ResNets the arithmetic is the paper's own. Images with a channel count other than 3
    use the mean of ImageNet's statistics for every channel.

    Its state (what the multi-scale schedule upscales and blurs between scales) is the image itself.
    """

    def __init__(self, images: torch.Tensor, preprocessing: Preprocessing | None = None) -> None:
        super().__init__()
        self.units = optimization_units(images.shape[1])
        self.x = nn.Parameter(self.units.normalize(images).detach().clone())

    def state(self) -> torch.Tensor:
        return self.forward().detach()

    @torch.no_grad()
    def set_state(self, state: torch.Tensor) -> None:
        self.x.copy_(self.units.normalize(state))

    def forward(self) -> torch.Tensor:
        return self.units.denormalize(self.x)


@functools.cache
def optimization_units(channels: int) -> Preprocessing:
    """The normalization the pixel parameterization optimizes in: ImageNet's statistics (for 3 channels;
    their mean for every channel otherwise), independent of the model's own."""
    if channels == 3:
        return Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    mean, std = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3
    return Preprocessing(mean=(mean,) * channels, std=(std,) * channels)


@register_param("fft")
class FourierParam(Param):
    """Spectrum of each (optionally decorrelated) channel, scaled by ``1/f^decay``, through a sigmoid.

    Its state is the logits before the sigmoid (in decorrelated coordinates when ``decorrelate``): the
    multi-scale schedule resizes those, so saturated pixels keep their value instead of being clamped.

    Lucid (and Lucent) divide the inverse transform by 4 before the color mapping, a constant their code
    calls magic; here it is not, so with Adam (which is blind to the scale of the gradient) Lucid's
    learning rate ``lr`` is ``lr / 4`` here: its default 0.05 is the ``lucid`` recipe's 0.0125.

    Decorrelation is a colour notion: images of other than 3 channels (grayscale, multispectral) are
    optimized in their own channels.
    """

    options: ClassVar[dict[str, str]] = {"decay": "fft_decay", "decorrelate": "decorrelate"}
    scale: torch.Tensor

    def __init__(self, state: torch.Tensor, preprocessing: Preprocessing | None = None, *, decay: float = 1.0,
                 decorrelate: bool = True) -> None:
        super().__init__()
        height, width = state.shape[-2:]
        self.size = (height, width)
        self.decorrelate = decorrelate
        scale = 1.0 / _frequencies(height, width).clamp(min=1.0 / max(height, width)) ** decay
        self.register_buffer("scale", scale.to(state))
        self.spectrum = nn.Parameter(self._spectrum(state.detach()))

    @classmethod
    def initial_state(cls, images: torch.Tensor, *, decorrelate: bool = True, **options: Any) -> torch.Tensor:
        """The logits (decorrelated when ``decorrelate``) that show ``images``."""
        logits = torch.logit(images.detach().clamp(_EPS, 1 - _EPS))
        return _from_color(logits) if decorrelate and logits.shape[1] == 3 else logits

    def state(self) -> torch.Tensor:
        return self._logits().detach()

    @torch.no_grad()
    def set_state(self, state: torch.Tensor) -> None:
        self.spectrum.copy_(self._spectrum(state))

    def _spectrum(self, state: torch.Tensor) -> torch.Tensor:
        """The (real-view) parameter that shows ``state``."""
        return torch.view_as_real(torch.fft.rfft2(state, norm="ortho") / self.scale).contiguous()

    def _logits(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        return torch.fft.irfft2(spectrum, s=self.size, norm="ortho")

    def forward(self) -> torch.Tensor:
        logits = self._logits()
        if self.decorrelate and logits.shape[1] == 3:  # colour decorrelation is an RGB notion
            logits = _to_color(logits)
        return torch.sigmoid(logits)


@functools.cache
def natural_magnitude(height: int, width: int) -> torch.Tensor:
    """Mean magnitude spectrum ``(3, H, W//2+1)`` of scikit-image's photos resized to ``height`` x ``width``."""
    spectra = []
    for image in natural_images():
        pixels = to_tensor(image.resize((width, height)))
        pixels = pixels - pixels.mean(dim=(-2, -1), keepdim=True)
        spectra.append(torch.fft.rfft2(pixels, norm="ortho").abs()[0])
    return torch.stack(spectra).mean(dim=0)


def _phase(images: torch.Tensor) -> torch.Tensor:
    centred = images - images.mean(dim=(-2, -1), keepdim=True)
    return torch.angle(torch.fft.rfft2(centred, norm="ortho"))


@register_param("maco")
class MacoParam(Param):
    """MACO: the phase of each channel's spectrum, with the natural-image magnitude held fixed.

    The image is the inverse transform, standardized per image and channel, through ``sigmoid(1.5 z)``;
    its state is the image (only its phase survives into the next scale).
    """

    magnitude: torch.Tensor

    def __init__(self, images: torch.Tensor, preprocessing: Preprocessing | None = None) -> None:
        super().__init__()
        height, width = images.shape[-2:]
        self.size = (height, width)
        self.register_buffer("magnitude", natural_magnitude(height, width).to(images))
        self.phase = nn.Parameter(_phase(images.detach()))

    def state(self) -> torch.Tensor:
        return self.forward().detach()

    @torch.no_grad()
    def set_state(self, state: torch.Tensor) -> None:
        self.phase.copy_(_phase(state))

    def forward(self) -> torch.Tensor:
        spectrum = torch.polar(self.magnitude.expand_as(self.phase), self.phase)
        x = torch.fft.irfft2(spectrum, s=self.size, norm="ortho")
        z = (x - x.mean(dim=(-2, -1), keepdim=True)) / (x.std(dim=(-2, -1), keepdim=True) + 1e-8)
        return torch.sigmoid(1.5 * z)


@register_param("cppn")
class CPPNParam(Param):
    """Lucid's CPPN (compositional pattern-producing network): each image is a small network of 1x1
    layers from the pixel coordinates ``(x, y)`` to the colors, and its weights are what is optimized.

    As in Lucid's ``cppn()``: coordinates from ``-sqrt(3)`` to ``sqrt(3)``, 8 layers of 24 channels with
    weights drawn from ``N(0, 1/fan_in)``, the composite activation ``[atan(x)/0.67, atan(x)^2/0.6]``, and
    a last layer with zero weights into a sigmoid (every image starts mid-gray). The image is a smooth
    function of the coordinates, drawn at any size: its state is the weights ``(B, P)``, carried unchanged
    from scale to scale. Each image's starting weights are drawn from a generator seeded by its starting
    noise, so the seed decides them and the batch does not. Lucid optimizes it with Adam at lr 0.005.
    """

    resizable: ClassVar[bool] = False
    HIDDEN = 24
    LAYERS = 8
    coords: torch.Tensor

    def __init__(self, state: torch.Tensor, preprocessing: Preprocessing | None = None, *,
                 size: tuple[int, int] = (224, 224), channels: int = 3) -> None:
        super().__init__()
        self.size, self.channels = size, channels
        self.weights = nn.ParameterList(nn.Parameter(w.clone()) for w in self._split(state.detach()))
        height, width = size
        r = 3.0 ** 0.5
        longest = max(height, width)
        y = torch.linspace(-r, r, height) * height / longest
        x = torch.linspace(-r, r, width) * width / longest
        grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1).reshape(1, height * width, 2)
        self.register_buffer("coords", grid.to(state))

    @classmethod
    def shapes(cls, channels: int) -> list[tuple[int, int]]:
        """``(fan_in, fan_out)`` of each layer; each layer has a weight and a bias."""
        sizes = [2] + [2 * cls.HIDDEN] * cls.LAYERS
        return [(sizes[i], cls.HIDDEN) for i in range(cls.LAYERS)] + [(2 * cls.HIDDEN, channels)]

    @classmethod
    def initial_state(cls, images: torch.Tensor, **options: Any) -> torch.Tensor:
        states = []
        for image in images.detach().cpu():
            generator = torch.Generator().manual_seed(zlib.crc32(image.float().numpy().tobytes()))
            parts = []
            for i, (fan_in, fan_out) in enumerate(cls.shapes(images.shape[1])):
                last = i == cls.LAYERS
                weight = torch.zeros(fan_in, fan_out) if last else \
                    torch.randn(fan_in, fan_out, generator=generator) * fan_in ** -0.5
                parts += [weight.flatten(), torch.zeros(fan_out)]
            states.append(torch.cat(parts))
        return torch.stack(states).to(images.device)

    @classmethod
    def build(cls, state: torch.Tensor, size: tuple[int, int], preprocessing: Preprocessing,
              **options: Any) -> Param:
        return cls(state, preprocessing, size=size, channels=preprocessing.channels)

    def _split(self, state: torch.Tensor) -> list[torch.Tensor]:
        parts, start = [], 0
        for fan_in, fan_out in self.shapes(self.channels):
            parts.append(state[:, start:start + fan_in * fan_out].reshape(-1, fan_in, fan_out))
            start += fan_in * fan_out
            parts.append(state[:, start:start + fan_out].reshape(-1, 1, fan_out))
            start += fan_out
        if start != state.shape[1]:
            raise InvalidRecipeError(f"a CPPN state of {state.shape[1]} numbers does not fit {self.channels} channels")
        return parts

    def state(self) -> torch.Tensor:
        return torch.cat([w.detach().flatten(1) for w in self.weights], dim=1)

    @torch.no_grad()
    def set_state(self, state: torch.Tensor) -> None:
        for weight, value in zip(self.weights, self._split(state)):
            weight.copy_(value)

    def forward(self) -> torch.Tensor:
        net = self.coords.expand(self.weights[0].shape[0], -1, -1)
        for i in range(0, 2 * self.LAYERS, 2):
            net = torch.atan(torch.baddbmm(self.weights[i + 1], net, self.weights[i]))
            net = torch.cat([net / 0.67, net * net / 0.6], dim=-1)
        out = torch.sigmoid(torch.baddbmm(self.weights[-1], net, self.weights[-2]))
        return out.transpose(1, 2).reshape(out.shape[0], self.channels, *self.size)


def param_options(cls: type[Param], values: Mapping[str, object]) -> dict[str, object]:
    """The keyword arguments of ``cls`` found in ``values`` (recipe fields or keyword names): what its
    ``initial_state`` and ``build`` take as ``**options``."""
    return {key: values[name if name in values else key] for key, name in cls.options.items()
            if name in values or key in values}


def initial_state(kind: str, images: torch.Tensor, **options: Any) -> torch.Tensor:
    """The state of the registered parameterization ``kind`` that shows ``images`` ``(B,C,H,W)`` in [0, 1].

    ``options`` may hold more than ``kind`` takes; only its own are passed on.
    """
    cls = PARAMS.get(kind)
    return cls.initial_state(images, **param_options(cls, options))


def make_param(kind: str, state: torch.Tensor, preprocessing: Preprocessing, *, size: tuple[int, int] | None = None,
               **options: Any) -> Param:
    """Build the registered parameterization ``kind`` from a state (see :func:`initial_state`), drawing
    images of ``size`` px (default: an image state's own size; the model's input for a CPPN).

    The schedule resizes and blurs states between scales; ``param.state()`` gives it back and
    ``param.set_state(state)`` writes one in place (the optimizer's moments are kept), which is how the
    periodic blur of a recipe's ``blur_every`` works.
    """
    cls = PARAMS.get(kind)
    if size is None:
        size = (state.shape[-2], state.shape[-1]) if cls.resizable else preprocessing.input_shape
    return cls.build(state, size, preprocessing, **param_options(cls, options))
