"""The paper's loop written plainly: the oracle the fast paths are checked and timed against.

:func:`naive_render` optimizes one filter at a time, runs the *whole* network on every step (a forward
hook reads the layer; nothing stops the pass early), in NCHW float32, with the weights frozen: the way
the authors' code works. It supports only what the paper does (pixel parameterization, channel-mean
objective, no transforms or penalties), and gives the same images as :func:`filterscope.render.render`
with the same recipe and seed, up to float rounding; tests check that, and ``benchmarks/speed.py``
times both.
"""

from __future__ import annotations

import torch

from ..layers import resolve_layer
from ..zoo.model import LoadedModel, frozen
from .objectives import Channel
from .params import optimization_units
from .recipes import Recipe
from .render import Schedule, box_blur, start_noise, upscale

__all__ = ["naive_render"]


def naive_render(model: LoadedModel, layer: str, channel: int, recipe: Recipe,
                 seed: int = 0) -> tuple[torch.Tensor, float]:
    """One filter's visualization by the plain loop: ``((3,S,S) image in [0,1], final activation)``."""
    if recipe.param != "pixel" or recipe.transforms.active or recipe.tv or recipe.l1 or recipe.l2 or recipe.blur_every:
        raise ValueError("naive_render implements the paper's recipe only (pixel parameterization, no transforms, "
                         "no penalties)")
    ref = resolve_layer(model, layer)
    objective = Channel(ref, channel).resolve(model)
    module = dict(model.module.named_modules())[ref.name]
    prep = model.preprocessing
    units = optimization_units(prep.channels)  # the pixels in ImageNet-normalized units, as the paper's code
    calls: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda _m, _i, output: calls.append(output))

    def activation(normalized: torch.Tensor) -> torch.Tensor:
        calls.clear()
        model.module(normalized)
        return calls[ref.call][:, channel].mean()

    try:
        with frozen(model.module):
            schedule = Schedule.for_input(recipe, prep.input_shape)
            shape = (prep.channels, *schedule.sizes[0])
            image = start_noise(recipe, seed, objective.description, shape)[None].to(model.device)
            for scale, (size, steps) in enumerate(zip(schedule.sizes, schedule.steps)):
                if scale > 0:
                    image = box_blur(upscale(image, size), schedule.blur)
                x = units.normalize(image).detach().clone().requires_grad_(True)
                optimizer = torch.optim.Adam([x], lr=recipe.lr, weight_decay=recipe.weight_decay)
                for _ in range(steps):
                    optimizer.zero_grad(set_to_none=True)
                    loss = -activation(prep.normalize(units.denormalize(x)))
                    loss.backward()
                    optimizer.step()
                image = units.denormalize(x).detach()
            image = image.clamp(0, 1)
            with torch.no_grad():
                value = float(activation(prep.normalize(image)))
    finally:
        hook.remove()
    return image[0].cpu(), value
