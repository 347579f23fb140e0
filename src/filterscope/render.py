"""Activation maximization: the optimization loop and its recipe.

The paper's method (Amirli 2021, section 2): start from faint noise at 56 px, run Adam on the pixels
so that the objective rises, then repeatedly upscale the image by 1.2, blur it, and optimize again.
Every number of that method is a field of :class:`Recipe`, whose defaults reproduce the paper's code:

====================  =========  ============================================================
field                 default    meaning
====================  =========  ============================================================
size                  56         side of the starting noise image, px
scales                12         optimization scales: 56, 67, 80, 96, 115, 138, 165, 198, 237,
                                 284, 340, 408 (each ``int(previous * upscale)``)
upscale               1.2        factor between scales (bicubic)
steps                 20         Adam steps per scale in the first half of the scales
late_steps_factor     1.3        later scales run ``int(steps * factor)`` = 26 steps
lr                    0.1        Adam learning rate
weight_decay          1e-6       Adam weight decay. The paper's text says 1e-2; the authors' code
                                 uses this value, and so do we
blur                  5          box blur (px, odd; 0 = none) applied after each upscaling
blur_every            0          also blur every N steps within a scale (0 = never; not the paper)
noise_mean/amplitude  128, 20    start image ``(U(0,1)*20 + 128)/255``
param                 pixel      parameterization: pixel, fft or maco (see :mod:`filterscope.params`)
decorrelate           False      fft: optimize in decorrelated color space
fft_decay             1.0        fft: spectrum scaled by 1/f^decay
transforms            none       random pad/jitter/scale/rotate before each forward pass
tv, l1, l2            0          penalty weights: total variation, distance from mid-gray
name                  paper      a label (named recipes: :mod:`filterscope.recipes`)
====================  =========  ============================================================

As in the authors' code, the optimized tensor at each scale is the *normalized* image (the model's
own normalization is applied when a scale starts and undone when it ends); the output is clipped to
[0, 1] once, at the end. The loss is minus the objective (the channel's mean activation).

Many objectives are optimized together, one image each, in one batch: batch elements never interact
(eval-mode networks, element-wise Adam), so the result equals running them one by one. Each image's
starting noise is drawn from a generator seeded by ``(seed, objective description)``, so it does not
depend on which other objectives share the batch. How many share a batch, the memory format and the
precision are the :class:`~filterscope.runtime.Runtime`'s business; in the default (fp32) runtime none
of them changes the images beyond float rounding.
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from .errors import InvalidRecipeError
from .images import to_pil
from .objectives import Channel, Objective, evaluate, is_batchwise
from .params import PARAMS, initial_state, make_param
from .runtime import Forward, Runtime, auto_batch_size, estimate_memory, memory_format
from .transforms import NO_TRANSFORMS, TransformStack
from .zoo.registry import LoadedModel, coerce_model

__all__ = ["Recipe", "PAPER_RECIPE", "RenderResult", "StepInfo", "render", "iter_render", "plan_batches",
           "visualize_filters", "start_noise", "upscale", "box_blur"]


@dataclass(frozen=True)
class Recipe:
    """The numbers of the multi-scale activation-maximization schedule (defaults: the paper's)."""

    size: int = 56
    scales: int = 12
    upscale: float = 1.2
    steps: int = 20
    late_steps_factor: float = 1.3
    lr: float = 0.1
    weight_decay: float = 1e-6
    blur: int = 5
    noise_mean: float = 128 / 255
    noise_amplitude: float = 20 / 255
    param: str = "pixel"
    decorrelate: bool = False
    fft_decay: float = 1.0
    transforms: TransformStack = NO_TRANSFORMS
    tv: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    blur_every: int = 0
    name: str = "paper"

    def __post_init__(self) -> None:
        problems = []
        if self.param not in PARAMS:
            problems.append(f"param must be one of {', '.join(PARAMS)} (got {self.param!r})")
        if min(self.tv, self.l1, self.l2) < 0:
            problems.append("tv, l1 and l2 must not be negative")
        if self.blur_every < 0 or (self.blur_every and self.blur < 3):
            problems.append("blur_every needs blur of at least 3 px, and must not be negative")
        if self.size < 1:
            problems.append(f"size must be at least 1 px (got {self.size})")
        if self.scales < 1:
            problems.append(f"scales must be at least 1 (got {self.scales})")
        if self.upscale < 1:
            problems.append(f"upscale must be at least 1 (got {self.upscale})")
        if self.steps < 0 or self.late_steps_factor < 0:
            problems.append("steps and late_steps_factor must not be negative")
        if self.lr <= 0:
            problems.append(f"lr must be positive (got {self.lr})")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must not be negative (got {self.weight_decay})")
        if self.blur < 0 or (self.blur > 1 and self.blur % 2 == 0):
            problems.append(f"blur must be 0 or an odd number of pixels (got {self.blur})")
        if problems:
            raise InvalidRecipeError("Invalid recipe: " + "; ".join(problems))

    def sizes(self) -> list[int]:
        """Image side at each scale: ``[56, 67, 80, ..., 408]`` for the paper's recipe."""
        sizes = [self.size]
        for _ in range(self.scales - 1):
            sizes.append(int(sizes[-1] * self.upscale))
        return sizes

    def steps_per_scale(self) -> list[int]:
        """Adam steps at each scale: ``steps`` in the first half, ``int(steps * late_steps_factor)`` after."""
        first_late = math.ceil(self.scales / 2)
        late = int(self.steps * self.late_steps_factor)
        return [self.steps if i < first_late else late for i in range(self.scales)]

    @property
    def total_steps(self) -> int:
        return sum(self.steps_per_scale())

    @property
    def output_size(self) -> int:
        return self.sizes()[-1]

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Recipe:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidRecipeError(f"Unknown recipe field(s) {unknown}; fields are {sorted(known)}")
        values = dict(values)
        if isinstance(values.get("transforms"), dict):
            values["transforms"] = TransformStack.from_dict(values["transforms"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise InvalidRecipeError(f"Invalid recipe: {exc}") from None

    def replace(self, **changes: float | int | None) -> Recipe:
        """A copy with the given fields changed; ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PAPER_RECIPE = Recipe()


@dataclass(frozen=True)
class StepInfo:
    """Progress of one optimization step, passed to the ``callback`` of :func:`render`."""

    chunk: int
    chunks: int
    scale: int
    size: int
    step: int
    steps_done: int
    total_steps: int
    values: torch.Tensor


@dataclass
class RenderResult:
    """Images and numbers of one activation-maximization run.

    Attributes:
        images: ``(N,3,S,S)`` float in [0, 1] on the CPU, one per objective.
        objectives: The resolved objectives, in order.
        values: ``(N,)`` each objective on its final (clipped) image.
        initial_values: ``(N,)`` each objective on its starting noise image.
        history: ``(N, total_steps)`` the objective before each Adam step.
        recipe, seed: What produced the images.
        model_name, weights: Which network, with which weights.
        seconds: Wall time of the optimization.
        copy_numbers: For each image, which copy of its objective it is (0 for the first).
    """

    images: torch.Tensor
    objectives: list[Objective]
    values: torch.Tensor
    initial_values: torch.Tensor
    history: torch.Tensor
    recipe: Recipe
    seed: int
    model_name: str
    weights: str
    seconds: float
    extra: dict[str, str] = field(default_factory=dict)
    copy_numbers: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.objectives)

    def pil(self, index: int) -> Image.Image:
        """Image ``index`` as an 8-bit RGB PIL image."""
        return to_pil(self.images[index])

    def to_pil(self) -> list[Image.Image]:
        return [self.pil(i) for i in range(len(self))]

    def metadata(self, index: int) -> dict[str, str]:
        """Text metadata of image ``index``: model, weights, objective, layer, filter, seed, recipe, ..."""
        from . import __version__  # late: the package imports this module

        obj = self.objectives[index]
        meta = {
            "filterscope_version": __version__,
            "model": self.model_name,
            "weights": self.weights,
            "objective": obj.description,
            "seed": str(self.seed),
            "recipe": _json(self.recipe.to_dict()),
            "final_activation": f"{float(self.values[index]):.6g}",
            "initial_activation": f"{float(self.initial_values[index]):.6g}",
        }
        if isinstance(obj, Channel):
            meta["layer"] = str(obj.layer)
            meta["filter"] = str(obj.channel)
        meta.update(self.extra)
        return meta

    @staticmethod
    def concatenate(parts: Sequence[RenderResult]) -> RenderResult:
        first = parts[0]
        return RenderResult(
            images=torch.cat([p.images for p in parts]),
            objectives=[o for p in parts for o in p.objectives],
            values=torch.cat([p.values for p in parts]),
            initial_values=torch.cat([p.initial_values for p in parts]),
            history=torch.cat([p.history for p in parts]),
            recipe=first.recipe, seed=first.seed, model_name=first.model_name, weights=first.weights,
            seconds=sum(p.seconds for p in parts), extra=first.extra,
            copy_numbers=[n for p in parts for n in p.copy_numbers],
        )


def _json(values: dict) -> str:
    import json

    return json.dumps(values, sort_keys=True)


def _noise_seed(seed: int, key: str) -> int:
    # torch's CPU generator (mt19937) keeps only 32 bits of its seed: mix seed and key into 32 bits.
    return zlib.crc32(f"{int(seed)}\x00{key}".encode("utf-8"))


def start_noise(recipe: Recipe, seed: int, key: str) -> torch.Tensor:
    """The starting image ``(3,S,S)`` in [0, 1] for one objective: ``(U(0,1)*20 + 128)/255`` by default."""
    generator = torch.Generator().manual_seed(_noise_seed(seed, key))
    noise = torch.rand((3, recipe.size, recipe.size), generator=generator)
    return noise * recipe.noise_amplitude + recipe.noise_mean


def upscale(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic resize of ``(B,3,H,W)`` to ``size`` x ``size`` (as OpenCV's INTER_CUBIC: a = -0.75)."""
    return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)


def box_blur(images: torch.Tensor, kernel: int) -> torch.Tensor:
    """``kernel`` x ``kernel`` mean filter with reflected borders (OpenCV's ``cv2.blur``)."""
    if kernel <= 1:
        return images
    pad = kernel // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    return F.avg_pool2d(padded, kernel, stride=1)


def _penalty(images: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """``(B,)`` weighted total variation and L1/L2 distance from mid-gray, per image."""
    total = images.new_zeros(images.shape[0])
    if recipe.tv:
        dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean(dim=(1, 2, 3))
        dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean(dim=(1, 2, 3))
        total = total + recipe.tv * (dx + dy)
    if recipe.l1:
        total = total + recipe.l1 * (images - 0.5).abs().mean(dim=(1, 2, 3))
    if recipe.l2:
        total = total + recipe.l2 * ((images - 0.5) ** 2).mean(dim=(1, 2, 3))
    return total


def _run_chunk(model: LoadedModel, objectives: list[Objective], keys: list[tuple[str, int]], recipe: Recipe,
               seed: int,
               runtime: Runtime, callback: Callable[[StepInfo], None] | None, chunk: int,
               chunks: int) -> RenderResult:
    device = model.device
    normalize = model.preprocessing.normalize
    layers = list(dict.fromkeys(ref for o in objectives for ref in o.layers))
    images = torch.stack([start_noise(recipe, seed, key) for key, _ in keys]).to(device)
    # One generator per image for the random transforms: an image's result never depends on its batch.
    generators = [torch.Generator().manual_seed(_noise_seed(seed, "transforms\x00" + key)) for key, _ in keys]
    penalized = bool(recipe.tv or recipe.l1 or recipe.l2)
    history = torch.zeros(len(objectives), recipe.total_steps)
    started = time.perf_counter()
    done = 0
    with Forward(model, layers, runtime) as capture:
        with torch.no_grad():
            initial = evaluate(objectives, capture(normalize(images))).float().cpu()
        state = initial_state(recipe.param, images, decorrelate=recipe.decorrelate)
        for scale, (size, steps) in enumerate(zip(recipe.sizes(), recipe.steps_per_scale())):
            if scale > 0:
                state = box_blur(upscale(state, size), recipe.blur)
            param = make_param(recipe.param, state, model.preprocessing, decay=recipe.fft_decay,
                               decorrelate=recipe.decorrelate).to(device)
            optimizer = torch.optim.Adam(param.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
            for step in range(steps):
                optimizer.zero_grad(set_to_none=True)
                image = param()
                values = evaluate(objectives, capture(normalize(recipe.transforms(image, generators))))
                loss = -values.sum()
                if penalized:
                    loss = loss + _penalty(image, recipe).sum()
                loss.backward()
                optimizer.step()
                if recipe.blur_every and (step + 1) % recipe.blur_every == 0 and step + 1 < steps:
                    param.set_state(box_blur(param.state(), recipe.blur))  # periodic blur, a regularizer
                values = values.detach().float().cpu()
                history[:, done] = values
                done += 1
                if callback is not None:
                    callback(StepInfo(chunk, chunks, scale, size, step, done, recipe.total_steps, values))
            state = param.state()
            with torch.no_grad():
                images = param()
        images = images.clamp(0, 1)
        with torch.no_grad():
            final = evaluate(objectives, capture(normalize(images))).float().cpu()
    return RenderResult(images=images.cpu(), objectives=objectives, values=final, initial_values=initial,
                        history=history, recipe=recipe, seed=seed, model_name=model.name, weights=model.weights,
                        seconds=time.perf_counter() - started, copy_numbers=[n for _, n in keys],
                        extra=_runtime_metadata(capture))


def _runtime_metadata(forward: Forward) -> dict[str, str]:
    # The optimization is chaotic: anything that changes float rounding (batch size, memory format,
    # precision, thread count, device) changes the image. Recorded so that a run can be repeated exactly.
    threads = torch.get_num_threads() if forward.model.device.type == "cpu" else None
    return {"device": str(forward.model.device), "precision": forward.runtime.precision,
            "memory_format": "channels_last" if forward.channels_last else "nchw",
            **({"threads": str(threads)} if threads else {})}


def plan_batches(model: LoadedModel, objectives: Sequence[Objective], recipe: Recipe,
                 runtime: Runtime | None = None) -> int:
    """The automatic batch size for rendering ``objectives`` (resolved) with ``recipe`` on ``model``.

    As many images as the runtime's memory budget holds at the recipe's largest input size (see
    :func:`filterscope.runtime.auto_batch_size`); all of them when an objective compares the images of
    a batch (diversity), which must then fit.
    """
    runtime = runtime or Runtime()
    layers = list(dict.fromkeys(ref for o in objectives for ref in o.layers))
    size = recipe.output_size + 2 * recipe.transforms.pad
    estimate = estimate_memory(model, layers, size, runtime)
    budget = runtime.memory_budget(model.device)
    if any(is_batchwise(o) for o in objectives):
        auto_batch_size(1, estimate, budget, model.device, runtime.precision)  # one image must fit
        if estimate.fits(budget) < len(objectives):
            raise InvalidRecipeError(
                f"a batchwise objective (diversity) needs all {len(objectives)} images in one batch, about "
                f"{estimate.total(len(objectives)) / 2**20:.0f} MiB at {size} px; the memory budget holds "
                f"{estimate.fits(budget)}: raise --max-memory or use fewer copies")
        return len(objectives)
    return auto_batch_size(len(objectives), estimate, budget, model.device, runtime.precision)


def iter_render(model: LoadedModel | torch.nn.Module, objectives: Objective | Sequence[Objective], *,
                recipe: Recipe = PAPER_RECIPE, seed: int = 0, batch_size: int | None = None, copies: int = 1,
                runtime: Runtime | None = None,
                callback: Callable[[StepInfo], None] | None = None) -> Iterator[RenderResult]:
    """Like :func:`render`, but yields one :class:`RenderResult` per batch as soon as it is finished."""
    model = coerce_model(model)
    objectives = [objectives] if isinstance(objectives, Objective) else list(objectives)
    if copies < 1:
        raise InvalidRecipeError(f"copies must be at least 1 (got {copies})")
    objectives = [o for o in objectives for _ in range(copies)]
    if not objectives:
        return
    resolved = [o.resolve(model) for o in objectives]  # all checked before any work starts
    # The k-th repeat of an objective gets its own starting noise.
    seen: dict[str, int] = {}
    keys = []
    for o in resolved:
        n = seen[o.description] = seen.get(o.description, -1) + 1
        keys.append((o.description if n == 0 else f"{o.description}#{n}", n))
    runtime = runtime or Runtime()
    if batch_size is not None and batch_size < 1:
        raise InvalidRecipeError(f"batch_size must be at least 1 (got {batch_size})")
    size = batch_size or plan_batches(model, resolved, recipe, runtime)
    if any(is_batchwise(o) for o in resolved) and size < len(resolved):
        raise InvalidRecipeError("a batchwise objective (diversity) compares the images of one batch: "
                                 "leave batch_size unset")
    chunks = math.ceil(len(resolved) / size)
    was_training = model.module.training
    model.module.eval()
    try:
        with memory_format(model, runtime):  # once for all batches
            for chunk in range(chunks):
                part = slice(chunk * size, (chunk + 1) * size)
                result = _run_chunk(model, resolved[part], keys[part], recipe, seed, runtime, callback, chunk, chunks)
                result.extra["batch_size"] = str(size)  # with the objectives' order, fixes the batches
                yield result
    finally:
        model.module.train(was_training)


def render(model: LoadedModel | torch.nn.Module, objectives: Objective | Sequence[Objective], *,
           recipe: Recipe = PAPER_RECIPE, seed: int = 0, batch_size: int | None = None, copies: int = 1,
           runtime: Runtime | None = None, callback: Callable[[StepInfo], None] | None = None) -> RenderResult:
    """Optimize one image per objective, from noise, with the network frozen.

    Args:
        model: A :class:`LoadedModel` (or any ``nn.Module``, used with ImageNet preprocessing).
        objectives: One objective, or a sequence: one image is optimized for each.
        recipe: The schedule; the paper's by default.
        seed: Seeds the starting noise; the same seed, recipe and model give the same images.
        batch_size: How many images are optimized together (default: picked from the memory budget,
            see :func:`plan_batches`). The images do not depend on it.
        copies: Images per objective, each from its own noise (with ``diversity`` they are pushed apart).
        runtime: Precision, memory format and memory budget (default: fp32, channels-last, a quarter of
            the free RAM or half the free GPU memory); see :mod:`filterscope.runtime`.
        callback: Called after every Adam step with a :class:`StepInfo`.

    Returns:
        Images, final and initial objective values, per-step history and metadata.

    Raises:
        UnknownLayerError, ChannelError, InvalidObjectiveError: an objective does not fit the model.
    """
    return RenderResult.concatenate(list(iter_render(model, objectives, recipe=recipe, seed=seed,
                                                     batch_size=batch_size, copies=copies, runtime=runtime,
                                                     callback=callback)))


def visualize_filters(model: LoadedModel | torch.nn.Module, layer: str, filters: Sequence[int], **options) -> RenderResult:
    """:func:`render` with one :class:`~filterscope.objectives.Channel` objective per filter of ``layer``."""
    return render(model, [Channel(layer, int(f)) for f in filters], **options)
