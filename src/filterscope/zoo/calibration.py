"""Random networks that are alive: batch-norm statistics re-estimated on photos, and the check that they are.

A freshly initialized network in eval mode normalizes with the default batch-norm statistics (mean 0, variance
1), which match nothing its convolutions produce: in a random EfficientNet-Lite0 the activations shrink with
depth to about 1e-10 at ``_blocks.15``, so a "what did training change" comparison shows nothing, and activation
maximization on it does not rise. The honest baseline is the random network as it would be at the start of
training, with each batch norm's statistics those of its own inputs: :func:`reestimate_batchnorm` runs
:func:`photo_views` (the reference photos, whole and in seeded random crops) through the network with the batch
norms alone in training mode and momentum ``None`` (a cumulative average over the batches, as torchvision's
``update_bn`` and timm do), then freezes it again. :func:`activation_scales` is the check: the root mean square
of every layer's output, which must be of order one.

Only the running statistics change; no weight does. The views are seeded, so the same seed gives the same
network (and the same :func:`~filterscope.zoo.weights.weights_fingerprint`). :func:`calibrate` keeps the statistics
it estimated in the cache folder (:func:`~filterscope.files.cache_dir`), keyed by the initialized network's
fingerprint, the seed and the views: about 4 s on 2 cores the first time, a file read after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from PIL import Image
from torch import nn

from ..data import natural_images
from ..errors import InvalidOptionError
from ..files import atomic_write, cache_dir
from ..tensors import to_tensor
from .preprocessing import Preprocessing
from .weights import weights_fingerprint

__all__ = ["photo_views", "batch_norms", "reestimate_batchnorm", "calibrate", "activation_scales", "CALIBRATION_CROPS"]

CALIBRATION_CROPS = 10
"""Random crops per reference photo in a calibration: with the photo itself, 110 views of 10 photos."""

_BatchNorm = nn.modules.batchnorm._BatchNorm  # BatchNorm1d/2d/3d and SyncBatchNorm (as torchvision's update_bn)


def photo_views(preprocessing: Preprocessing, images: Sequence[Image.Image] | None = None, *,
                crops_per_image: int = 8, seed: int = 0) -> torch.Tensor:
    """Each image in the model's view plus ``crops_per_image`` seeded random crops (30–100 % of the image, with
    the input's aspect ratio), resized to the input: ``(N,C,H,W)`` in [0, 1]. The default images are
    scikit-image's photos (:func:`~filterscope.data.natural_images`) in the model's mode.

    Raises:
        InvalidOptionError: the model's inputs are not photos (neither 1 nor 3 channels).
    """
    mode = preprocessing.image_mode
    if mode is None:
        raise InvalidOptionError(f"the model takes {preprocessing.channels} channels: there are no reference photos "
                                 "for it; pass a (N,C,H,W) tensor of your own data")
    height, width = preprocessing.input_shape
    generator = torch.Generator().manual_seed(seed)
    views = []
    for image in images if images is not None else natural_images():
        views.append(preprocessing.prepare(image)[0])
        w, h = image.size
        for _ in range(crops_per_image):
            crop_h = int(min(h, w * height / width) * (0.3 + 0.7 * float(torch.rand((), generator=generator))))
            crop_w = crop_h if width == height else max(1, round(crop_h * width / height))
            x = int(torch.randint(0, w - crop_w + 1, (), generator=generator))
            y = int(torch.randint(0, h - crop_h + 1, (), generator=generator))
            crop = image.crop((x, y, x + crop_w, y + crop_h)).resize((width, height), Image.Resampling.BILINEAR)
            views.append(to_tensor(crop, mode)[0])
    return torch.stack(views)


def batch_norms(module: nn.Module) -> list[_BatchNorm]:
    """The batch-norm layers of ``module`` that keep running statistics."""
    return [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def reestimate_batchnorm(module: nn.Module, preprocessing: Preprocessing, images: torch.Tensor, *,
                         batch_size: int = 16) -> int:
    """Replace the running statistics of every batch norm in ``module`` by those of ``images`` ``(N,C,H,W)`` in
    [0, 1] (a cumulative average over batches of ``batch_size``), then put the module in eval mode. Returns the
    number of batch norms re-estimated (0: nothing to do). Weights and every other buffer stay as they are."""
    norms = batch_norms(module)
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative moving average: every batch counts the same
    module.eval()
    for m in norms:
        m.train()
    layout = torch.channels_last if images.dim() == 4 else torch.contiguous_format  # about twice as fast on CPUs
    module.to(memory_format=layout)  # type: ignore[call-overload]  # not in the stubs
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                batch = preprocessing.normalize(images[start:start + batch_size])
                module(batch.contiguous(memory_format=layout))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        module.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        module.eval()
    return len(norms)


def calibrate(module: nn.Module, preprocessing: Preprocessing, seed: int) -> int:
    """Re-estimate the batch norms of a freshly initialized ``module`` on :data:`CALIBRATION_CROPS` seeded crops of
    each reference photo (cached). Returns the number of views (0: no batch norms, or no photos for its inputs)."""
    norms = batch_norms(module)
    if not norms or preprocessing.image_mode is None:
        return 0
    count = len(natural_images()) * (CALIBRATION_CROPS + 1)
    height, width = preprocessing.input_shape
    key = f"{weights_fingerprint(module)[:24]}-seed{seed}-views{count}-{height}x{width}"
    path = cache_dir() / "batchnorm" / f"{key}.pt"
    names = [name for name, m in module.named_modules() if m in norms]
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        for name, m in zip(names, norms):
            for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                getattr(m, buffer).copy_(stored[f"{name}.{buffer}"])
        return count
    except (OSError, KeyError, RuntimeError, ValueError, TypeError, AttributeError):
        pass  # no cache yet, or an unreadable one: estimate again
    views = photo_views(preprocessing, crops_per_image=CALIBRATION_CROPS, seed=seed)
    reestimate_batchnorm(module, preprocessing, views)
    state = {f"{name}.{buffer}": getattr(m, buffer).clone() for name, m in zip(names, norms)
             for buffer in ("running_mean", "running_var", "num_batches_tracked")}
    with contextlib.suppress(OSError):  # a read-only or full cache only costs the next load the same 4 s
        atomic_write(path, lambda tmp: torch.save(state, tmp))
    return views.shape[0]


def activation_scales(module: nn.Module, preprocessing: Preprocessing, images: torch.Tensor) -> dict[str, float]:
    """The root mean square of each leaf module's output over ``images`` (in [0, 1]), by module name, in the
    order they run: the check that a network is alive (every value of order one) and not vanishing (1e-10)."""
    scales: dict[str, float] = {}
    handles = []
    for name, child in module.named_modules():
        if name and not list(child.children()):
            def hook(_: nn.Module, __: object, output: object, name: str = name) -> None:
                if isinstance(output, torch.Tensor) and output.is_floating_point():
                    scales[name] = float(output.detach().double().pow(2).mean().sqrt())
            handles.append(child.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(preprocessing.normalize(images))
    finally:
        for handle in handles:
            handle.remove()
    return scales
