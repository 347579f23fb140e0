"""Judges: the feature spaces in which the machine 2-AFC task (:mod:`.afc`) compares images.

A judge turns images into feature vectors; the task standardizes each feature over the dataset (its mean and
spread, :class:`Standardized`) and weighs each group of features (a block of the independent network, a
histogram) equally, then takes cosine similarities. Which judge to believe was decided by one measured criterion
(``benchmarks/judges.py``, the docs' trust page): the 2-AFC score of a unit's *exemplars* on 800 diverse ImageNet
photos, over units of three depths of EfficientNet-Lite0, with random references at chance. Measured there:

- ``matched`` (the default): EfficientNet-Lite2's blocks around the explained layer's relative depth (the block
  at the same fraction of the network, and three on each side), each channel's spatial maximum, with the pooled
  features (the blocks together weigh as much as the pooled features). A shallow unit is judged by shallow
  features, a deep one by deep ones.
- ``pooled``: Lite2's 1,280 pooled features alone (the previous judge: weak below the last blocks).
- ``colour-texture``: a non-neural control, colour (HSV) and local-binary-pattern histograms (scikit-image).

Hand-written: a judge is a few tensor operations over the independent network's blocks; what matters is the
measured choice. :data:`JUDGES` is a registry, so a user adds one with ``@JUDGES.register(name)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InvalidOptionError
from ..layers import LayerRef, layer_info, list_layers, resolve_layer
from ..metrics import to_input_size
from ..registry import Registry
from ..runtime.core import Forward
from ..zoo.model import LoadedModel
from .independent import Independent

__all__ = ["Judge", "JUDGES", "DEFAULT_JUDGE", "Standardized", "judge_for", "relative_depth", "MATCHED_WIDTH"]

DEFAULT_JUDGE = "matched"
MATCHED_WIDTH = 3
"""Blocks on each side of the matched depth that the ``matched`` judge reads."""
_BATCH = 16


@dataclass
class Judge:
    """A feature space for the 2-AFC task: ``embed(images)`` gives ``(N, D)`` raw features of images ``(N,C,H,W)``
    in [0, 1] (any size); ``groups`` the feature count of each group and ``shares`` each group's share of the
    total weight (default: equal), which :class:`Standardized` applies."""

    name: str
    embed: Callable[[torch.Tensor], torch.Tensor]
    groups: tuple[int, ...]
    describe: str = ""
    shares: tuple[float, ...] = ()


@dataclass
class Standardized:
    """A judge's features standardized over a dataset: each feature to mean 0 and spread 1 (over the dataset's
    images), each group scaled to the same total weight; renders are standardized with the dataset's statistics."""

    judge: Judge
    mean: torch.Tensor
    std: torch.Tensor
    weights: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        groups = self.judge.groups
        shares = self.judge.shares or tuple(1 / len(groups) for _ in groups)
        # a group of g standardized features, each scaled by sqrt(share / g), has squared norm share * g on average
        self.weights = torch.cat([torch.full((g,), math.sqrt(share / g), dtype=torch.float64)
                                  for g, share in zip(groups, shares)])

    @classmethod
    def fit(cls, judge: Judge, features: torch.Tensor) -> Standardized:
        """The statistics of the dataset's raw ``features`` ``(N, D)``."""
        f = features.double()
        return cls(judge, f.mean(dim=0), f.std(dim=0).clamp(min=1e-6))

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (features.double() - self.mean) / self.std * self.weights


JUDGES: Registry[Callable[[Independent, float], Judge]] = Registry("judge", InvalidOptionError,
                                                                  "filterscope trust --help")
"""Judge factories by name: ``factory(independent, depth) -> Judge`` (``depth``: the explained layer's relative
depth in its network, 0 at the input, 1 at the output)."""


def relative_depth(model: LoadedModel, layer: LayerRef) -> float:
    """Where ``layer`` sits in ``model`` (0 … 1): in a network of numbered blocks (an EfficientNet's ``_blocks.N``),
    its block's number over the last one; otherwise its index among the model's layers over their count."""
    blocks = _blocks(model)
    for i, name in enumerate(blocks):
        if layer.name == name or layer.name.startswith(name + "."):
            return i / max(len(blocks) - 1, 1)
    names = [info.name for info in list_layers(model)]
    if layer.name not in names or len(names) < 2:
        return 1.0
    return names.index(layer.name) / (len(names) - 1)


def judge_for(name: str | None, independent: Independent, model: LoadedModel, layer: LayerRef) -> Judge:
    """The judge ``name`` (one of :data:`JUDGES`) for units of ``layer`` of ``model``; ``None``: ``matched`` when
    the independent network has numbered blocks (an EfficientNet), else ``pooled`` (the record names the one used)."""
    if name is None:
        name = DEFAULT_JUDGE if _blocks(independent.model) else "pooled"
    return JUDGES.get(name)(independent, relative_depth(model, layer))


@JUDGES.register("pooled")
def pooled(independent: Independent, depth: float) -> Judge:
    """The independent network's pooled features (the input of its classifier)."""
    return Judge("pooled", lambda images: independent.embed(images)[0], (independent.head.in_features,),
                 f"{independent.name} pooled features")


_BLOCK = re.compile(r"^(.*blocks)\.(\d+)$")


def _blocks(model: LoadedModel) -> list[str]:
    """The names of the network's blocks in order (``_blocks.0``, ``_blocks.1``, … of an EfficientNet)."""
    found = [(m.group(1), int(m.group(2))) for name, _ in model.module.named_modules() if (m := _BLOCK.match(name))]
    return [f"{prefix}.{i}" for prefix, i in sorted(found, key=lambda p: p[1])]


@JUDGES.register("matched")
def matched(independent: Independent, depth: float) -> Judge:
    """The independent network's blocks at the explained layer's relative depth (±:data:`MATCHED_WIDTH`), each
    channel's spatial maximum, with the pooled features."""
    model = independent.model
    names = _blocks(model)
    if not names:
        raise InvalidOptionError(f"The matched judge reads the blocks of the independent network, and {model.name} "
                                 "has no numbered blocks: use --judge pooled")
    centre = round(depth * (len(names) - 1))
    chosen = names[max(0, centre - MATCHED_WIDTH):centre + MATCHED_WIDTH + 1]
    head = next(name for name, module in model.module.named_modules() if module is independent.head)
    refs = [resolve_layer(model, name) for name in chosen]
    pooled_ref = resolve_layer(model, f"{head}@in")
    groups = (*tuple(layer_info(model, ref).channels for ref in refs), independent.head.in_features)

    def embed(images: torch.Tensor) -> torch.Tensor:
        out: list[torch.Tensor] = []
        with torch.no_grad(), Forward(model, [*refs, pooled_ref]) as forward:
            for start in range(0, images.shape[0], _BATCH):
                batch = to_input_size(model, images[start:start + _BATCH].float()).to(model.device)
                acts = forward(model.preprocessing.normalize(batch))
                maxima = [acts[ref].flatten(2).amax(dim=2).cpu() for ref in refs]
                out.append(torch.cat([*maxima, acts[pooled_ref].flatten(1).cpu()], dim=1))
        return torch.cat(out) if out else torch.zeros(0, sum(groups))

    shares = (*(0.5 / len(refs) for _ in refs), 0.5)  # the blocks together weigh as much as the pooled features
    return Judge("matched", embed, groups, f"{model.name} {chosen[0]}–{chosen[-1]} maxima and pooled features", shares)


@JUDGES.register("colour-texture")
def colour_texture(independent: Independent, depth: float) -> Judge:
    """A non-neural control: each image's HSV colour histogram (8 x 4 x 4 bins) and uniform local binary patterns
    (8 neighbours, radius 1: 10 bins) of its grey levels (scikit-image)."""
    from skimage.color import rgb2gray, rgb2hsv
    from skimage.feature import local_binary_pattern

    def embed(images: torch.Tensor) -> torch.Tensor:
        rows = []
        for image in images.float().clamp(0, 1):
            pixels = image[:3].permute(1, 2, 0).numpy() if image.shape[0] >= 3 else \
                image[:1].expand(3, -1, -1).permute(1, 2, 0).numpy()
            hist, _ = np.histogramdd(rgb2hsv(pixels).reshape(-1, 3), bins=(8, 4, 4), range=((0, 1),) * 3)
            codes = local_binary_pattern((rgb2gray(pixels) * 255).astype(np.uint8), 8, 1, "uniform")
            texture, _ = np.histogram(codes, bins=10, range=(0, 10))
            rows.append(np.concatenate([hist.ravel() / max(hist.sum(), 1), texture / max(texture.sum(), 1)]))
        return torch.tensor(np.array(rows), dtype=torch.float32).reshape(len(rows), 138)

    return Judge("colour-texture", embed, (128, 10), "HSV colour and LBP texture histograms")
