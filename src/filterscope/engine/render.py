"""Activation maximization: the optimization loop.

The paper's method (Amirli 2021, section 2): start from faint noise at 56 px, run Adam on the pixels
so that the objective rises, then repeatedly upscale the image by 1.2, blur it, and optimize again.
The numbers are a :class:`~filterscope.recipes.Recipe` (plain data); :meth:`Stages.from_recipe` turns
one into the objects the loop runs, as captum's ``InputOptimization(model, loss, input_param,
transform)`` receives its parts:

* a :class:`Schedule`: image size and Adam steps at each scale, and the blur between scales;
* the parameterization (a registered :class:`~filterscope.params.Param` class and its options);
* the random :class:`~filterscope.transforms.Transform` applied before each forward pass;
* a :class:`Penalty` on the image (total variation, distance from gray);
* the optimizer factory (Adam with the recipe's learning rate and weight decay).

As in the authors' code, the pixel parameterization optimizes the image in ImageNet-normalized units
(:func:`~filterscope.params.optimization_units`; the model's own normalization is applied before each
forward pass, so any normalization gives the same optimization); the output is clipped to [0, 1] once,
at the end. The loss is minus the objective (the channel's mean activation).

Many objectives are optimized together, one image each, in one batch: batch elements never interact
(eval-mode networks, element-wise Adam), so the result equals running them one by one. Each image's
starting noise is drawn from a generator seeded by ``(seed, objective description)``, so it does not
depend on which other objectives share the batch. How many share a batch, the memory format and the
precision are the :class:`~filterscope.runtime.Runtime`'s business; in the default (fp32) runtime none
of them changes the images beyond float rounding. The network runs through
:class:`~filterscope.runtime.Forward`, which freezes it for the duration and gives it back unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..arguments import checked
from ..errors import InvalidRecipeError, ModelInputError
from ..layers import list_layers
from ..runtime.core import Forward, Runtime, cpu_description, format_size, memory_format, plan_batch_size
from ..runtime.gradients import RedirectedReLU
from ..runtime.precision import PROBE_BATCH, PrecisionChoice, choose_precision
from ..zoo.model import LoadedModel, check_seed, coerce_model
from ..zoo.preprocessing import REFERENCE_SIDE
from .objective_syntax import ObjectiveLike, as_objectives
from .objectives import Channel, Objective, layers_of, objective_values
from .params import PARAMS, Param, param_options
from .recipes import PAPER_RECIPE, Recipe
from .results import RenderResult, StepInfo
from .transforms import Transform

__all__ = ["Stages", "Schedule", "Penalty", "render", "iter_render", "plan_batches", "visualize_filters",
           "start_noise", "upscale", "box_blur", "gaussian_blur", "BLURS", "choose_runtime"]


def _noise_seed(seed: int, key: str) -> int:
    # torch's CPU generator (mt19937) keeps only 32 bits of its seed: mix seed and key into 32 bits.
    return zlib.crc32(f"{int(seed)}\x00{key}".encode())


def start_noise(recipe: Recipe, seed: int, key: str, shape: tuple[int, int, int] | None = None) -> torch.Tensor:
    """The starting image ``(C,H,W)`` in [0, 1] for one objective: ``(U(0,1)*20 + 128)/255`` by default.

    ``shape`` is ``(channels, height, width)``; by default ``(3, recipe.size, recipe.size)``.
    """
    generator = torch.Generator().manual_seed(_noise_seed(seed, key))
    noise = torch.rand(shape or (3, recipe.size, recipe.size), generator=generator)
    return noise * recipe.noise_amplitude + recipe.noise_mean


def upscale(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of ``(B,C,H,W)`` to ``size`` (a side, or ``(height, width)``; as OpenCV's
    INTER_CUBIC: a = -0.75)."""
    shape = (size, size) if isinstance(size, int) else size
    return F.interpolate(images, size=shape, mode="bicubic", align_corners=False)


def box_blur(images: torch.Tensor, kernel: int) -> torch.Tensor:
    """``kernel`` x ``kernel`` mean filter with reflected borders (OpenCV's ``cv2.blur``)."""
    if kernel <= 1:
        return images
    pad = kernel // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    return F.avg_pool2d(padded, kernel, stride=1)


def gaussian_blur(images: torch.Tensor, kernel: int) -> torch.Tensor:
    """The Gaussian with the variance of a ``kernel`` px box (``sigma = sqrt((kernel**2 - 1) / 12)``),
    truncated at 3 sigma, reflected borders: the same amount of blur as :func:`box_blur`, without the box's
    ringing side lobes."""
    if kernel <= 1:
        return images
    sigma = math.sqrt((kernel * kernel - 1) / 12)
    radius = min(math.ceil(3 * sigma), images.shape[-1] - 1, images.shape[-2] - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    weights = torch.exp(-offsets**2 / (2 * sigma * sigma))
    weights = weights / weights.sum()
    channels, width = images.shape[1], 2 * radius + 1
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, weights.view(1, 1, 1, width).expand(channels, 1, 1, width), groups=channels)
    return F.conv2d(rows, weights.view(1, 1, width, 1).expand(channels, 1, width, 1), groups=channels)


BLURS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {"box": box_blur, "gaussian": gaussian_blur}


# ------------------------------------------------------------------------------------------ stages
@dataclass(frozen=True)
class Schedule:
    """The multi-scale schedule: the image side and Adam steps at each scale, and the blurs.

    Attributes:
        sizes: Image ``(height, width)`` at each scale, px.
        steps: Adam steps at each scale.
        blur: Blur kernel (px, odd; 0 or 1 = none) after each upscaling.
        blur_every: Also blur the state every this many steps within a scale (0 = never).
        blur_kind: ``box`` or ``gaussian`` (:data:`BLURS`).
        lr_end: The learning rate at the last step of each scale, as a fraction of the recipe's; it
            falls along a half cosine (1 = constant).
        warmup: Steps of linear learning-rate warm-up at the start of each scale.
    """

    sizes: tuple[tuple[int, int], ...]
    steps: tuple[int, ...]
    blur: int = 0
    blur_every: int = 0
    blur_kind: str = "box"
    lr_end: float = 1.0
    warmup: int = 0

    @property
    def total_steps(self) -> int:
        return sum(self.steps)

    @property
    def largest(self) -> tuple[int, int]:
        """The largest ``(height, width)`` of the schedule (by area)."""
        return max(self.sizes, key=lambda s: s[0] * s[1])

    @classmethod
    def for_input(cls, recipe: Recipe, input_shape: tuple[int, int]) -> Schedule:
        """The recipe's schedule for a model whose input is ``input_shape``.

        A recipe's pixel numbers are written for an input of ``recipe.reference_size`` (224 px: the
        paper's 56 → 408 px is 0.25x → 1.82x of 224): each size becomes ``round(size * H / 224)`` by
        ``round(size * W / 224)`` and the blur kernel scales alike (to the nearest odd number). For a
        224 x 224 input, or ``reference_size=None``, every number is the recipe's own.
        """
        fy, fx = recipe.scale_factors(input_shape)
        sizes = tuple((max(1, round(side * fy)), max(1, round(side * fx))) for side in recipe.sizes())
        return cls(sizes, tuple(recipe.steps_per_scale()), _odd(recipe.blur * min(fy, fx)) if recipe.blur > 1
                   else recipe.blur, recipe.blur_every, recipe.blur_kind, recipe.lr_end, recipe.warmup)

    def fixed(self, shape: tuple[int, int]) -> Schedule:
        """One scale at ``shape`` with all the steps (for models that only run at their input size)."""
        return dataclasses.replace(self, sizes=((shape[0], shape[1]),), steps=(self.total_steps,))

    def blurred(self, state: torch.Tensor) -> torch.Tensor:
        return BLURS[self.blur_kind](state, self.blur)

    def next_scale(self, state: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The state carried into a scale of ``size`` px: upscaled (bicubic), then blurred."""
        return self.blurred(upscale(state, size))

    def lr_factor(self, step: int, steps: int) -> float:
        """The learning rate of step ``step`` (0-based) of a scale of ``steps``, as a fraction of the
        recipe's: linear warm-up, then a half cosine from 1 to ``lr_end``."""
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.lr_end == 1:
            return 1.0
        span = steps - self.warmup - 1
        progress = (step - self.warmup) / span if span > 0 else 1.0
        return self.lr_end + (1 - self.lr_end) * 0.5 * (1 + math.cos(math.pi * progress))

    def blurs_after(self, step: int, steps: int) -> bool:
        """Whether the periodic blur runs after step ``step`` (0-based) of a scale of ``steps``."""
        return bool(self.blur_every) and (step + 1) % self.blur_every == 0 and step + 1 < steps


def _odd(value: float) -> int:
    """The nearest odd whole number, at least 1."""
    return max(1, 2 * math.floor(value / 2) + 1)


@dataclass(frozen=True)
class Penalty:
    """``(B,)`` weighted total variation and L1/L2 distance from mid-gray, per image, added to the loss."""

    tv: float = 0.0
    l1: float = 0.0
    l2: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.tv or self.l1 or self.l2)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        total = images.new_zeros(images.shape[0])
        if self.tv:
            dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean(dim=(1, 2, 3))
            dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean(dim=(1, 2, 3))
            total = total + self.tv * (dx + dy)
        if self.l1:
            total = total + self.l1 * (images - 0.5).abs().mean(dim=(1, 2, 3))
        if self.l2:
            total = total + self.l2 * ((images - 0.5) ** 2).mean(dim=(1, 2, 3))
        return total


OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


@dataclass(frozen=True)
class Stages:
    """The objects the loop runs; :meth:`from_recipe` builds them from a recipe.

    Attributes:
        schedule: Sizes, steps and blurs.
        param: The parameterization class; built at each scale as ``param(state, preprocessing,
            **param_options)`` from the state the previous scale left.
        param_options: Keyword arguments of ``param``.
        transform: Random transforms before each forward pass.
        penalty: Added to the loss, per image.
        optimizer: Builds the optimizer of one scale from the parameters (a new one at each scale).
        relu_override_steps: The first steps use the redirected ReLU gradient (:mod:`filterscope.gradients`)
            when an image of the batch needs it: its objective starts at exactly 0, or its first gradient
            is zero everywhere.
        copies: Transformed copies of each image per step; the objective is their mean (each is a row
            of the network's batch).
        tiles: The image is ``tiles`` x ``tiles`` copies of one tile, the parameterization's (a periodic
            texture; every tile pixel gets the gradient of all its copies).
        start: An image to start every objective from instead of noise, ``(C, H, W)`` in [0, 1], resized to the
            first scale (caricature, accentuation).
    """

    schedule: Schedule
    param: type[Param]
    transform: Transform
    penalty: Penalty
    optimizer: OptimizerFactory
    param_options: dict[str, object] = field(default_factory=dict)
    relu_override_steps: int = 0
    copies: int = 1
    tiles: int = 1
    start: torch.Tensor | None = None

    @classmethod
    def from_recipe(cls, recipe: Recipe, input_shape: tuple[int, int] = (REFERENCE_SIDE, REFERENCE_SIDE)) -> Stages:
        """The stages of ``recipe`` for a model whose input is ``input_shape`` (its pixel numbers scaled
        from 224 px, see :meth:`Schedule.for_input`)."""
        param = PARAMS.get(recipe.param)
        lr, weight_decay = recipe.lr, recipe.weight_decay

        def adam(parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
            return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)

        factor = min(recipe.scale_factors(input_shape))
        return cls(schedule=Schedule.for_input(recipe, input_shape), param=param,
                   param_options=param_options(param, recipe.to_dict()), transform=recipe.transforms.scaled(factor),
                   penalty=Penalty(recipe.tv, recipe.l1, recipe.l2), optimizer=adam,
                   relu_override_steps=recipe.relu_override_steps, copies=recipe.transform_copies,
                   tiles=recipe.tiles)


# -------------------------------------------------------------------------------------------- loop
@dataclass(frozen=True)
class Chunk:
    """One batch of a render: its resolved objectives, the key of each one's starting noise (with which copy
    of its objective it is), and which batch of how many."""

    objectives: list[Objective]
    keys: list[tuple[str, int]]
    recipe: Recipe
    seed: int
    index: int = 0
    count: int = 1


class _Override:
    """Whether the redirected ReLU gradient (:mod:`filterscope.gradients`) runs, decided in one place: only
    for a recipe that asks for it, only in its first ``steps`` steps, and only for a batch that needs it (an
    objective at exactly 0 at the start, or an image without any gradient after the first step; see
    :func:`_gradient_vanished`)."""

    def __init__(self, steps: int) -> None:
        self.steps, self.needed = steps, False
        self.redirect: RedirectedReLU | None = None

    def hooks(self, model: LoadedModel) -> contextlib.AbstractContextManager[object]:
        """Hooks every ReLU of the network the loop runs (``Forward.model``: maybe a folded copy), when
        the recipe has override steps."""
        if not self.steps:
            return contextlib.nullcontext()
        self.redirect = RedirectedReLU(model.module)
        return self.redirect

    def decide_at_start(self, initial: torch.Tensor) -> None:
        """``initial``: the objectives on the starting noise; one at exactly 0 needs the override."""
        self.needed = bool(self.steps) and bool((initial == 0).any())

    def decide_after_backward(self, param: Param, done: int) -> None:
        """After the first backward pass: an image without any gradient needs the override."""
        if self.steps and not self.needed and done == 0:
            self.needed = _gradient_vanished(param)

    def set_for(self, done: int | None) -> None:
        """Before step ``done`` (0-based); ``None``: off, the optimization is over."""
        if self.redirect is not None:
            self.redirect.active = done is not None and self.needed and done < self.steps

    def metadata(self, done: int) -> dict[str, str]:
        if not self.steps:
            return {}
        return {"relu_override": f"the first {min(self.steps, done)} steps" if self.needed else
                "not needed: every image started with a gradient"}


class _ChunkRun:
    """The optimization of one :class:`Chunk`: start noise, then each scale's Adam steps (see the module
    docstring). :meth:`run` reads as the method: measure the noise, optimize scale by scale, clip, measure."""

    def __init__(self, model: LoadedModel, chunk: Chunk, stages: Stages, runtime: Runtime,
                 callback: Callable[[StepInfo], None] | None) -> None:
        self.model, self.chunk, self.stages, self.runtime, self.callback = model, chunk, stages, runtime, callback
        self.schedule = stages.schedule
        self.transform = stages.transform if stages.transform.active else None
        self.penalty = stages.penalty if stages.penalty.active else None
        self.copies = stages.copies if self.transform is not None else 1
        keys, seed = [key for key, _ in chunk.keys], chunk.seed
        # One generator per image for the random transforms: an image's result never depends on its batch.
        self.generators = [torch.Generator().manual_seed(_noise_seed(seed, "transforms\x00" + key)) for key in keys]
        # with several transformed copies per step, copy k of image i is row i * copies + k
        self.seen_objectives = [o for o in chunk.objectives for _ in range(self.copies)]
        self.seen_generators = [g for g in self.generators for _ in range(self.copies)]
        self.history = torch.zeros(len(chunk.objectives), self.schedule.total_steps)
        self.override = _Override(stages.relu_override_steps)
        self.done = 0

    def start_images(self) -> torch.Tensor:
        shape = (self.model.preprocessing.channels, *self.schedule.sizes[0])
        start = self.stages.start
        if start is not None:
            resized = torch.nn.functional.interpolate(start[None].float(), size=shape[1:], mode="bilinear",
                                                      antialias=True, align_corners=False)
            return resized.expand(len(self.chunk.keys), -1, -1, -1).clamp(0, 1).contiguous().to(self.model.device)
        return torch.stack([start_noise(self.chunk.recipe, self.chunk.seed, key, shape)
                            for key, _ in self.chunk.keys]).to(self.model.device)

    def measure(self, capture: Forward, images: torch.Tensor) -> torch.Tensor:
        """``(B,)`` the objectives on ``images``, without gradients."""
        with torch.no_grad():
            activations = capture(self.model.preprocessing.normalize(images))
            return objective_values(self.chunk.objectives, activations).float().cpu()

    def run(self) -> RenderResult:
        started = time.perf_counter()
        layers = layers_of(self.chunk.objectives)
        with Forward(self.model, layers, self.runtime, fold=self.runtime.fold) as capture, \
                self.override.hooks(capture.model):
            images = self.start_images()
            initial = self.measure(capture, images)
            self.override.decide_at_start(initial)
            tiles = self.stages.tiles
            if tiles > 1:  # the parameterization holds one tile; the image repeats it
                images = images[..., :_tile(images.shape[-2], tiles), :_tile(images.shape[-1], tiles)]
            state = self.stages.param.initial_state(images, **self.stages.param_options)
            for scale, (size, steps) in enumerate(zip(self.schedule.sizes, self.schedule.steps)):
                state, images = self.optimize_scale(capture, state, scale, size, steps)
            self.override.set_for(None)
            images = images.clamp(0, 1)
            final = self.measure(capture, images)
        images = images.cpu()
        extra = {**_runtime_metadata(capture), **self.override.metadata(self.done)}
        c = self.chunk
        return RenderResult(images=images, objectives=c.objectives, values=final, initial_values=initial,
                            history=self.history, recipe=c.recipe, seed=c.seed, model_name=self.model.name,
                            weights=self.model.weights, seconds=time.perf_counter() - started,
                            copy_numbers=[n for _, n in c.keys], extra=extra,
                            status=_status(images, initial, self.history, final))

    def optimize_scale(self, capture: Forward, state: torch.Tensor, scale: int, size: tuple[int, int],
                       steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``steps`` Adam steps at ``size``, from the state the previous scale left; the new state and image."""
        tiles, stages = self.stages.tiles, self.stages
        drawn = (_tile(size[0], tiles), _tile(size[1], tiles))
        if scale > 0 and stages.param.resizable:
            state = self.schedule.next_scale(state, drawn)
        param = stages.param.build(state, drawn, self.model.preprocessing, **stages.param_options).to(self.model.device)
        optimizer = stages.optimizer(param.parameters())
        base_lrs = [group["lr"] for group in optimizer.param_groups]
        for step in range(steps):
            factor = self.schedule.lr_factor(step, steps)
            for group, lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr * factor
            values = self.step(capture, param, optimizer, size)
            if self.schedule.blurs_after(step, steps):
                param.set_state(self.schedule.blurred(param.state()))  # periodic blur, a regularizer
            self.history[:, self.done] = values
            self.done += 1
            if self.callback is not None:
                c = self.chunk
                self.callback(StepInfo(c.index, c.count, scale, size[1], step, self.done, self.schedule.total_steps,
                                       values, size))
        state = param.state()
        with torch.no_grad():
            return state, _repeat(param(), tiles, size)

    def step(self, capture: Forward, param: Param, optimizer: torch.optim.Optimizer,
             size: tuple[int, int]) -> torch.Tensor:
        """One Adam step on minus the objectives (plus the penalty); the objectives before it, ``(B,)``."""
        self.override.set_for(self.done)
        optimizer.zero_grad(set_to_none=True)
        image = _repeat(param(), self.stages.tiles, size)
        values = self.seen_values(capture, image)
        loss = -values.sum()
        if self.penalty is not None:
            loss = loss + self.penalty(image).sum()
        loss.backward()
        self.override.decide_after_backward(param, self.done)
        optimizer.step()
        return values.detach().float().cpu()

    def seen_values(self, capture: Forward, image: torch.Tensor) -> torch.Tensor:
        """The objectives of ``image`` as the network sees it: transformed (mean over the copies) or not."""
        normalize, objectives = self.model.preprocessing.normalize, self.chunk.objectives
        if self.transform is None:
            return objective_values(objectives, capture(normalize(image)))
        if self.copies == 1:
            return objective_values(objectives, capture(normalize(self.transform(image, self.generators))))
        seen = self.transform(image.repeat_interleave(self.copies, dim=0), self.seen_generators)
        return objective_values(self.seen_objectives, capture(normalize(seen))).view(-1, self.copies).mean(dim=1)


def _gradient_vanished(param: Param) -> bool:
    """Whether some image of the batch got no gradient at all (every parameterization's parameters are
    batch-first): a unit at exactly 0, which only the redirected ReLU gradient can move.

    The override is Lucid's: where an image's ordinary gradient flows through a layer, the redirected one
    *is* the ordinary one. For a batch whose images all start with a gradient it changes nothing, except in
    a layer whose every ReLU is shut for an image while the gradient flows around it (a residual
    connection), and it costs a second pass through every ReLU: 2.4x the time of those steps on
    EfficientNet-Lite0. So it runs only for a batch with an image that needs it."""
    dead = None
    for parameter in param.parameters():
        if parameter.grad is None:
            continue
        flat = parameter.grad.detach().reshape(parameter.grad.shape[0], -1).abs().sum(dim=1) == 0
        dead = flat if dead is None else dead & flat
    return bool(dead is not None and dead.any())


def _tile(side: int, tiles: int) -> int:
    return math.ceil(side / tiles)


def _repeat(tile: torch.Tensor, tiles: int, size: tuple[int, int]) -> torch.Tensor:
    """The image of ``size`` made of ``tiles`` x ``tiles`` copies of ``tile`` (cropped to fit)."""
    if tiles == 1:
        return tile
    return tile.repeat(1, 1, tiles, tiles)[..., :size[0], :size[1]]


def _runs_at(model: LoadedModel, schedule: Schedule) -> bool:
    """Whether the network runs at the schedule's smallest and largest sizes (probed once, then cached)."""
    try:
        for shape in {schedule.sizes[0], schedule.largest}:
            list_layers(model, shape)
    except ModelInputError:
        list_layers(model)  # the model's own input must work; if it does not, that error is the one to see
        return False
    return True


def _status(images: torch.Tensor, initial: torch.Tensor, history: torch.Tensor, final: torch.Tensor) -> list[str]:
    """Per image: ``non-finite`` (NaN or inf in its values or pixels: the image means nothing),
    ``inactive`` (the objective was exactly 0 at the start and at the end: a dead unit, a flat image),
    ``not-improved`` (the objective did not rise above its start beyond float noise: a failed
    visualization, :func:`improved`), or ``ok``."""
    finite = torch.isfinite(final) & torch.isfinite(images.reshape(images.shape[0], -1)).all(dim=1) \
        & torch.isfinite(history).all(dim=1)
    dead = (initial == 0) & (final == 0)
    rose = improved(initial, final)
    return ["non-finite" if not f else "inactive" if d else "ok" if r else "not-improved"
            for f, d, r in zip(finite.tolist(), dead.tolist(), rose.tolist())]


def improved(initial: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
    """``(B,)`` whether each objective rose above its start beyond float noise: by more than 1e-4 of the larger
    magnitude of the two (and 1e-12 absolute). ``-2.17e-10 → -6.88e-10`` did not; ``0.1 → 2.5`` did."""
    initial, final = initial.double(), final.double()
    noise = 1e-4 * torch.maximum(initial.abs(), final.abs()) + 1e-12
    return final > initial + noise


def _runtime_metadata(forward: Forward) -> dict[str, str]:
    # The optimization is chaotic: anything that changes float rounding (batch size, memory format,
    # precision, thread count, device) changes the image. Recorded so that a run can be repeated exactly.
    model = forward.model
    threads = torch.get_num_threads() if model.device.type == "cpu" else None
    meta = {"device": str(model.device), "precision": forward.runtime.precision,
            "memory_format": "channels_last" if forward.channels_last else "nchw",
            **({"batch_norms": f"{len(forward.folded)} folded into their convolutions"} if forward.folded else {}),
            **({"threads": str(threads), "cpu": cpu_description()} if threads else {})}
    if "source" in model.info:  # a model outside the registry: enough to load it again (filterscope evaluate)
        meta["model_source"] = model.info["source"]
        meta["preprocessing"] = json.dumps(model.preprocessing.to_dict(), sort_keys=True)
    return meta


def _network_rows(objectives: Sequence[Objective], stages: Stages) -> tuple[tuple[int, int], int]:
    """The network's largest input ``(height, width)`` in a render, and its rows per image."""
    return stages.transform.output_shape(stages.schedule.largest), stages.copies if stages.transform.active else 1


@checked
def choose_runtime(model: LoadedModel, objectives: Sequence[Objective], recipe: Recipe | Stages,
                   runtime: Runtime | None = None) -> tuple[Runtime, PrecisionChoice]:
    """``runtime`` with its precision decided for rendering ``objectives`` (resolved) with ``recipe``:
    ``auto`` becomes ``bf16`` or ``fp32`` (:func:`filterscope.precision.choose_precision`, probing the
    network at the render's largest input and batch); an explicit precision stays."""
    model = coerce_model(model)
    runtime = runtime or Runtime()
    stages = recipe if isinstance(recipe, Stages) else Stages.from_recipe(recipe, model.preprocessing.input_shape)
    shape, _copies = _network_rows(objectives, stages)
    # probed at a fixed batch, so that the choice for a layer and recipe does not depend on how many
    # objectives a run has left (a resumed run decides as the first one did)
    choice = choose_precision(model, layers_of(objectives), shape, PROBE_BATCH, runtime)
    return dataclasses.replace(runtime, precision=choice.precision), choice


def plan_batches(model: LoadedModel, objectives: Sequence[Objective], recipe: Recipe | Stages,
                 runtime: Runtime | None = None) -> int:
    """The automatic batch size for rendering ``objectives`` (resolved) with ``recipe`` on ``model``:
    :func:`filterscope.runtime.plan_batch_size` at the largest (transformed) input of its schedule."""
    stages = recipe if isinstance(recipe, Stages) else Stages.from_recipe(recipe, model.preprocessing.input_shape)
    shape, copies = _network_rows(objectives, stages)
    # an image with c transformed copies costs the network c rows of its batch
    rows = plan_batch_size(model, layers_of(objectives), shape, len(objectives) * copies,
                           batchwise=any(o.batchwise for o in objectives), runtime=runtime)
    return max(1, rows // copies)


@checked
def iter_render(model: LoadedModel | torch.nn.Module, objectives: ObjectiveLike | Sequence[ObjectiveLike], *,
                recipe: Recipe = PAPER_RECIPE, seed: int = 0, batch_size: int | None = None, copies: int = 1,
                runtime: Runtime | None = None, callback: Callable[[StepInfo], None] | None = None,
                stages: Stages | None = None) -> Iterator[RenderResult]:
    """Like :func:`render`, but yields one :class:`RenderResult` per batch as soon as it is finished."""
    model = coerce_model(model)
    check_seed(seed)
    wanted = as_objectives(objectives)
    if copies < 1:
        raise InvalidRecipeError(f"copies must be at least 1 (got {copies})")
    wanted = [o for o in wanted for _ in range(copies)]
    if not wanted:
        return
    resolved = [o.resolve(model) for o in wanted]  # all checked before any work starts
    # The k-th repeat of an objective gets its own starting noise.
    seen: dict[str, int] = {}
    keys = []
    for o in resolved:
        n = seen[o.description] = seen.get(o.description, -1) + 1
        keys.append((o.description if n == 0 else f"{o.description}#{n}", n))
    runtime = runtime or Runtime()
    stages = stages or Stages.from_recipe(recipe, model.preprocessing.input_shape)
    if stages.copies > 1 and any(o.batchwise for o in resolved):
        raise InvalidRecipeError("a batchwise objective (diversity) compares the images of one batch, and "
                                 "transform_copies > 1 would compare an image's own copies: use transform_copies 1")
    note = ""
    if not _runs_at(model, stages.schedule):
        # A fixed-size head (a Linear after a flatten) runs only at the input size: render there, with all
        # the steps, and say so in the metadata.
        stages = dataclasses.replace(stages, schedule=stages.schedule.fixed(model.preprocessing.input_shape))
        note = (f"one scale at the input size {format_size(model.preprocessing.input_shape)} px: the model does not "
                "run at the recipe's other sizes")
    if batch_size is not None and batch_size < 1:
        raise InvalidRecipeError(f"batch_size must be at least 1 (got {batch_size})")
    runtime, choice = choose_runtime(model, resolved, stages, runtime)
    size = batch_size or plan_batches(model, resolved, stages, runtime)
    if any(o.batchwise for o in resolved) and size < len(resolved):
        raise InvalidRecipeError("a batchwise objective (diversity) compares the images of one batch: "
                                 "leave batch_size unset")
    chunks = math.ceil(len(resolved) / size)
    with memory_format(model, runtime):  # once for all batches
        for chunk in range(chunks):
            part = slice(chunk * size, (chunk + 1) * size)
            result = _ChunkRun(model, Chunk(resolved[part], keys[part], recipe, seed, chunk, chunks), stages, runtime,
                               callback).run()
            result.extra["batch_size"] = str(size)  # with the objectives' order, fixes the batches
            result.extra["precision_choice"] = choice.reason
            if note:
                result.extra["schedule"] = note
            yield result


@checked
def render(model: LoadedModel | torch.nn.Module, objectives: ObjectiveLike | Sequence[ObjectiveLike], *,
           recipe: Recipe = PAPER_RECIPE, seed: int = 0, batch_size: int | None = None, copies: int = 1,
           runtime: Runtime | None = None, callback: Callable[[StepInfo], None] | None = None,
           stages: Stages | None = None) -> RenderResult:
    """Optimize one image per objective, from noise, with the network frozen.

    Args:
        model: A :class:`LoadedModel`, or any ``nn.Module`` (used with ImageNet preprocessing, and
            given back as it was: mode and ``requires_grad`` flags unchanged).
        objectives: One objective or objective string (``"channel(_blocks.15, 16)"``), or a sequence
            of them: one image is optimized for each.
        recipe: The schedule; the paper's by default (see :mod:`filterscope.recipes`).
        seed: Seeds the starting noise; the same seed, recipe and model give the same images.
        batch_size: How many images are optimized together (default: picked from the memory budget,
            see :func:`plan_batches`). The images do not depend on it.
        copies: Images per objective, each from its own noise (with ``diversity`` they are pushed apart).
        runtime: Precision, memory format and memory budget (default: fp32, channels-last, a quarter of
            the free RAM or half the free GPU memory); see :mod:`filterscope.runtime`.
        callback: Called after every Adam step with a :class:`StepInfo`.
        stages: The objects the loop runs (:class:`Stages`), to replace a part (a transform, the optimizer);
            default ``Stages.from_recipe(recipe, input size)``. The recipe still gives the starting noise and
            is what the metadata record.

    Returns:
        Images, final and initial objective values, per-step history and metadata.

    Raises:
        UnknownLayerError, ChannelError, InvalidObjectiveError: an objective does not fit the model.
    """
    return RenderResult.concatenate(list(iter_render(model, objectives, recipe=recipe, seed=seed,
                                                     batch_size=batch_size, copies=copies, runtime=runtime,
                                                     callback=callback, stages=stages)))


@checked
def visualize_filters(model: LoadedModel | torch.nn.Module, layer: str, filters: Sequence[int], *,
                      recipe: Recipe = PAPER_RECIPE, seed: int = 0, batch_size: int | None = None,
                      copies: int = 1, runtime: Runtime | None = None,
                      callback: Callable[[StepInfo], None] | None = None) -> RenderResult:
    """:func:`render` with one :class:`~filterscope.objectives.Channel` objective per filter of ``layer``
    (the paper's objective: the filter's mean activation). The other arguments are :func:`render`'s."""
    return render(model, [Channel(layer, int(f)) for f in filters], recipe=recipe, seed=seed,
                  batch_size=batch_size, copies=copies, runtime=runtime, callback=callback)
