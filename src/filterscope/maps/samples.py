"""Activation samples of a layer for its activation atlas, taken in the exemplar pass.

Per image, the layer's activation vector at one seeded random position away from the border (Carter et al.'s
choice for large datasets: one position per image keeps the samples independent) or at every position
(``positions="all"``, for small datasets). With them, for a model with class logits, an *attribution* of each
sample to the image's top classes: activation × gradient of the class's logit, summed over the channels at
the sample's position (what that position contributes to the class, to first order).

The random position of an image depends only on the seed and the image's dataset index, so shards, batches
and resumed passes sample the same places. Attributions are directional derivatives: with one sample per image,
:class:`Tangents` gives the layer's output a forward-mode tangent equal to itself at the sample's position and
zero elsewhere, so that the logits' tangent is every class's attribution to that position, in the same forward
pass (which runs on to the output); the sample keeps its top :data:`TOP_CLASSES` classes by attribution.
Measured on Lite0 ``_blocks.15`` (batch 4, 224 px): 51 ms against 47 ms for the truncated forward, where five
backward passes from the image's top logits cost 59 ms. With every position sampled (one tangent per position
would be a pass each), :class:`Taps` makes the layer a gradient source instead and the samples are attributed
to the image's top classes by backward passes (:func:`class_gradients`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from ..hooks import Intervene, source_calls
from ..layers import LayerRef
from ..zoo.model import LoadedModel

__all__ = ["POSITIONS", "TOP_CLASSES", "SampleSpec", "SampleRows", "Taps", "Tangents", "primal", "sample_places",
           "per_image", "class_gradients", "collect"]

POSITIONS = ("random", "all")
"""Where the samples of an image are taken: one seeded random position away from the border, or every one."""
TOP_CLASSES = 5
"""How many of an image's top classes each sample is attributed to."""


@dataclass(frozen=True)
class SampleSpec:
    """What to sample of one layer: ``positions`` (:data:`POSITIONS`), the seed of the random positions, and
    how many top classes to attribute (0: none)."""

    positions: str = "random"
    seed: int = 0
    classes: int = TOP_CLASSES


@dataclass(frozen=True)
class SampleRows:
    """Samples of a batch: ``places`` ``(M, 3)`` (dataset index, y, x), ``vectors`` ``(M, C)``, and the top
    ``classes`` ``(M, K)`` with their ``attributions`` ``(M, K)`` (``K = 0`` without attribution)."""

    places: np.ndarray
    vectors: np.ndarray
    classes: np.ndarray
    attributions: np.ndarray


def per_image(grid: Sequence[int], positions: str) -> int:
    """Samples per image on an output ``grid`` (``(H, W)``; ``()`` for a layer without one)."""
    if positions == "random" or len(grid) < 2:
        return 1
    return int(grid[0]) * int(grid[1])


def sample_places(indices: Sequence[int], grid: Sequence[int], positions: str, seed: int) -> np.ndarray:
    """``(M, 3)`` int64 (dataset index, y, x) of the samples of these images, in image order: every position
    (row-major) or one random position each, at least one cell from the border where the grid has 3 or more."""
    height, width = (int(grid[0]), int(grid[1])) if len(grid) >= 2 else (1, 1)
    if positions == "all":
        ys, xs = np.divmod(np.arange(height * width), width)
        return np.array([(i, y, x) for i in indices for y, x in zip(ys, xs)], dtype=np.int64).reshape(-1, 3)
    rows = []
    for i in indices:
        rng = np.random.default_rng([seed, int(i)])
        y = int(rng.integers(1, height - 1)) if height >= 3 else int(rng.integers(0, height))
        x = int(rng.integers(1, width - 1)) if width >= 3 else int(rng.integers(0, width))
        rows.append((int(i), y, x))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


class Taps:
    """While open (a context manager), each of ``refs``'s outputs is a source of gradients: the first one
    reached becomes a leaf that requires grad, later ones are part of its graph; ``tensors[ref]`` holds them
    after a forward pass run with gradients enabled."""

    def __init__(self, model: LoadedModel, refs: Sequence[LayerRef]) -> None:
        self.tensors: dict[LayerRef, torch.Tensor] = {}
        self._hooks = [Intervene(model, ref, self._tap(ref), source_calls(model, ref)) for ref in refs]

    def _tap(self, ref: LayerRef) -> Callable[[torch.Tensor], torch.Tensor]:
        def tap(output: torch.Tensor) -> torch.Tensor:
            if torch.is_grad_enabled() and not output.requires_grad:
                output = output.detach().requires_grad_(True)
            self.tensors[ref] = output
            return output.clone()  # the network may change its input in place

        return tap

    def __enter__(self) -> Taps:
        for hook in self._hooks:
            hook.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for hook in self._hooks:
            hook.__exit__()


class Tangents:
    """While open (a context manager, inside ``forward_ad.dual_level()``), ``ref``'s output carries the tangent
    that is itself at each image's sampled position (:func:`sample_places` of ``indices``, set before each
    batch) and zero elsewhere: the logits' tangent is then each class's attribution to that position."""

    def __init__(self, model: LoadedModel, ref: LayerRef, spec: SampleSpec) -> None:
        self.spec, self.indices = spec, [0]
        self._hook = Intervene(model, ref, self._dual, source_calls(model, ref))

    def _dual(self, output: torch.Tensor) -> torch.Tensor:
        grid = _grid(output)
        places = sample_places(self.indices, tuple(grid.shape[2:]), self.spec.positions, self.spec.seed)
        mask = torch.zeros_like(grid)
        mask[torch.arange(len(places)), :, torch.from_numpy(places[:, 1]), torch.from_numpy(places[:, 2])] = 1.0
        with warnings.catch_warnings():  # torch scripts a helper on first use, with a DeprecationWarning
            warnings.filterwarnings("ignore", message=".*torch.jit.script", category=DeprecationWarning)
            return fwAD.make_dual(output.clone(), (grid * mask).reshape(output.shape))

    def __enter__(self) -> Tangents:
        self._hook.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hook.__exit__()


def primal(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor without its forward-mode tangent (itself when it has none)."""
    return fwAD.unpack_dual(tensor).primal


def _grid(act: torch.Tensor) -> torch.Tensor:
    return act if act.dim() == 4 else act.reshape(*act.shape[:2], 1, 1)


def class_gradients(logits: torch.Tensor, tensors: Sequence[torch.Tensor], k: int
                    ) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
    """Each image's top ``k`` classes ``(B, k)`` and, for each of ``tensors`` (in the logits' graph), the
    gradients of those classes' logits: ``grads[t][r]`` for the ``r``-th class, shaped like the tensor."""
    top = logits.detach().topk(k, dim=1).indices
    grads: list[list[torch.Tensor]] = [[] for _ in tensors]
    for r in range(k):
        found = torch.autograd.grad(logits.gather(1, top[:, r:r + 1]).sum(), list(tensors), retain_graph=r < k - 1,
                                    allow_unused=True)
        for t, g in enumerate(found):
            grads[t].append(torch.zeros_like(tensors[t]) if g is None else g)
    return top, grads


def collect(act: torch.Tensor, indices: Sequence[int], spec: SampleSpec, top: torch.Tensor | None = None,
            grads: Sequence[torch.Tensor] = (), attributions: torch.Tensor | None = None) -> SampleRows:
    """The samples of a batch's activations ``act`` ``(B, C, ...)`` of images ``indices``; with the images' top
    classes ``top`` ``(B, K)`` and the gradients of their logits with respect to ``act`` (:func:`class_gradients`),
    each sample's attribution to them; or with ``attributions`` ``(B, classes)``, every class's attribution to
    each image's one sample (:class:`Tangents`), of which the top ``spec.classes`` are kept."""
    grid = _grid(act.detach())
    places = sample_places(indices, tuple(grid.shape[2:]), spec.positions, spec.seed)
    where = {int(i): b for b, i in enumerate(indices)}
    batch_rows = torch.tensor([where[int(i)] for i in places[:, 0]], dtype=torch.int64)
    ys, xs = torch.from_numpy(places[:, 1]), torch.from_numpy(places[:, 2])
    vectors = grid[batch_rows, :, ys, xs].float().cpu().numpy()
    if attributions is not None and spec.classes:
        k = min(spec.classes, attributions.shape[1])
        scores, best = attributions.detach().float()[batch_rows].topk(k, dim=1)
        return SampleRows(places, vectors, best.cpu().numpy().astype(np.int32), scores.cpu().numpy())
    k = min(spec.classes, len(grads)) if top is not None else 0
    classes = np.zeros((len(places), k), dtype=np.int32)
    values = np.zeros((len(places), k), dtype=np.float32)
    for r in range(k):
        product = (grid * _grid(grads[r].detach()).float()).sum(dim=1)  # (B, H, W)
        values[:, r] = product[batch_rows, ys, xs].cpu().numpy()
        classes[:, r] = top[batch_rows, r].cpu().numpy()  # type: ignore[index]
    return SampleRows(places, vectors, classes, values)
