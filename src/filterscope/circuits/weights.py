"""Expanded weights: the linear map from one layer's channels to a later layer's, as the network computes it.

Between layers A (earlier) and B, :func:`expanded_weights` evaluates the network :func:`linearized` (every
rectifier the identity, max pools average pools; eval-mode batch norm is affine) on a zero input, makes A's
output a gradient leaf, and takes the Jacobian of B's centre position with respect to it: one row per channel
of B, all rows in one batched backward pass (``is_grads_batched``, a ``vmap`` over the rows; chunks bound
the memory). The Jacobian is cropped to the span where it is non-zero: an array ``(C_B, C_A, kh, kw)``,
``weights[o, i, dy, dx]`` being how much channel ``i`` of A at offset ``(dy, dx)`` from the crop's corner
adds to channel ``o`` of B at the centre.

Closed forms (the tests check autograd against them):

* adjacent convolutions, ``B = conv(A)`` with kernel ``W``: ``weights = W`` (cross-correlation order);
* ``B = conv(relu(bn(A)))``: ``weights[o, i] = W[o, i] * gamma_i / sqrt(var_i + eps)`` (eval batch norm
  folded in; its shift does not enter a Jacobian);
* a residual block ``B = A + conv2(conv1(A))``: the identity at the centre plus the full convolution of the
  two kernels;
* a depthwise block (1x1 expand ``E``, depthwise ``D``, 1x1 project ``P``):
  ``weights[o, i, y, x] = sum_m P[o, m] D[m, y, x] E[m, i]``.

When the non-zero span reaches the edge of A's grid, zero padding may have cut it: the input is enlarged (up
to ``max_scale`` times the model's input size) until the span lies inside.

A later layer without spatial axes (the logits) is read as a whole: ``weights`` is then ``(C_B, C_A, H, W)``
over A's whole grid, and its sum over the grid is the linearized direct effect of each A channel on each
output (:mod:`.classes`).

Hand-written (captum's ``extract_expanded_weights`` is unreleased and runs one backward per output channel;
Lucid's is TensorFlow 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .._deprecated import moved
from ..arguments import checked
from ..errors import UnknownLayerError
from ..hooks import Intervene, Leaf
from ..hooks import source_calls as _calls  # (the old name here is a deprecated path: see the end)
from ..layers import OUTPUT, Capture, LayerRef, resolve_layer
from ..zoo.model import LoadedModel, coerce_model, frozen
from .linear import linearized

__all__ = ["ExpandedWeights", "Connection", "expanded_weights", "jacobian_rows"]

ROW_BUDGET = 512 * 2**20
"""Bytes of backward-pass intermediates one chunk of batched rows may use."""


@dataclass(frozen=True)
class Connection:
    """One unit of a neighbouring layer and its connection to the unit in question.

    Attributes:
        unit: The other unit's index in its layer.
        weight: The expanded weight summed over the kernel (positive: excites).
        kernel: The ``(kh, kw)`` expanded weights, or ``None`` (a class: no spatial kernel).
        attribution: The data-aware attribution (``activation x gradient``, mean over exemplars), when measured.
        name: A class name, for the classes a unit promotes or suppresses.
    """

    unit: int
    weight: float
    kernel: np.ndarray | None = None
    attribution: float | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"unit": self.unit, "weight": self.weight}
        if self.kernel is not None:
            out["kernel"] = [[float(f"{v:.4g}") for v in row] for row in self.kernel.tolist()]  # 4 digits
        if self.attribution is not None:
            out["attribution"] = self.attribution
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True)
class ExpandedWeights:
    """The expanded weights from ``source`` (A) to ``target`` (B), see the module docstring.

    Attributes:
        source: Layer A, as resolved.
        target: Layer B.
        weights: ``(C_B, C_A, kh, kw)`` float32.
        origin: ``(y, x)`` of the crop's corner in A's grid, and ``centre`` the position of B it is read at.
        input_size: The (height, width) input the network was evaluated at.
    """

    source: LayerRef
    target: LayerRef
    weights: torch.Tensor
    origin: tuple[int, int]
    centre: tuple[int, int]
    input_size: tuple[int, int]
    totals: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "totals", self.weights.sum(dim=(2, 3)))

    @property
    def kernel_size(self) -> tuple[int, int]:
        return int(self.weights.shape[2]), int(self.weights.shape[3])

    def inputs(self, unit: int, k: int = 8) -> tuple[list[Connection], list[Connection]]:
        """The ``k`` units of A that excite ``unit`` of B most, and the ``k`` that inhibit it most."""
        return self._top(self.totals[unit], k, lambda i: self.weights[unit, i])

    def outputs(self, unit: int, k: int = 8) -> tuple[list[Connection], list[Connection]]:
        """The ``k`` units of B that ``unit`` of A excites most, and the ``k`` it inhibits most."""
        return self._top(self.totals[:, unit], k, lambda o: self.weights[o, unit])

    def _top(self, totals: torch.Tensor, k: int, kernel: Callable[[int], torch.Tensor]
             ) -> tuple[list[Connection], list[Connection]]:
        k = min(k, totals.numel())
        order = torch.argsort(totals, descending=True, stable=True).tolist()
        positive = [i for i in order[:k] if totals[i] > 0]
        negative = [i for i in reversed(order[-k:]) if totals[i] < 0]
        make = lambda i: Connection(i, float(totals[i]), kernel(i).numpy().copy())  # noqa: E731
        return [make(i) for i in positive], [make(i) for i in negative]


def jacobian_rows(model: LoadedModel, source: LayerRef, target: LayerRef, size: tuple[int, int], *,
                  probe: bool = False) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """The linearized Jacobian of ``target`` at its centre with respect to ``source``'s output, at input ``size``:
    ``(C_B, C_A, H_A, W_A)`` and the centre ``(y, x)`` (``None`` for a target without spatial axes).

    ``probe``: only one random positive combination of the rows, ``(1, C_A, H_A, W_A)`` (one backward pass):
    where it is non-zero is where the Jacobian is, for finding the span cheaply."""
    leaf = Leaf()
    channels = model.preprocessing.channels
    x = torch.zeros(1, channels, *size, device=model.device)
    with frozen(model.module), linearized(), torch.enable_grad(), \
            Intervene(model, source, leaf, _calls(model, source)), Capture(model, [target]) as capture:
        b = capture(x)[target]
    if leaf.tensor is None:
        raise UnknownLayerError(f"Layer {source} of {model.name} does not run before {target}: give the earlier "
                                "layer as the source")
    a = leaf.tensor
    centre = (b.shape[2] // 2, b.shape[3] // 2) if b.dim() == 4 else None
    rows = b[0, :, centre[0], centre[1]] if centre is not None else b[0].flatten()
    if not rows.requires_grad:
        raise UnknownLayerError(f"Layer {target} of {model.name} does not depend on {source}")
    if probe:
        weights = torch.rand(rows.shape, generator=torch.Generator().manual_seed(0)).to(rows) + 0.5
        (grad,) = torch.autograd.grad(rows, a, grad_outputs=weights, allow_unused=True)
        if grad is None:
            raise UnknownLayerError(f"Layer {target} of {model.name} does not depend on {source}")
        return grad.float().cpu(), centre
    per_row = max(4 * a.numel() * 8, 1)  # a rough size of one row's backward intermediates
    chunk = max(1, min(rows.numel(), ROW_BUDGET // per_row))
    eye = torch.eye(rows.numel(), device=a.device, dtype=rows.dtype)
    parts = []
    for start in range(0, rows.numel(), chunk):
        (grad,) = torch.autograd.grad(rows, a, grad_outputs=eye[start:start + chunk], is_grads_batched=True,
                                      retain_graph=True, allow_unused=True)
        if grad is None:
            raise UnknownLayerError(f"Layer {target} of {model.name} does not depend on {source}")
        parts.append(grad[:, 0].float().cpu())
    return torch.cat(parts), centre


def _span(jacobian: torch.Tensor) -> tuple[slice, slice]:
    mass = jacobian.abs().amax(dim=(0, 1))
    ys, xs = torch.nonzero(mass.amax(dim=1)).flatten(), torch.nonzero(mass.amax(dim=0)).flatten()
    if not len(ys):
        return slice(0, 0), slice(0, 0)
    return slice(int(ys[0]), int(ys[-1]) + 1), slice(int(xs[0]), int(xs[-1]) + 1)


@checked
def expanded_weights(model: LoadedModel | torch.nn.Module, source: str | LayerRef, target: str | LayerRef, *,
                     size: int | tuple[int, int] | None = None, max_scale: int = 4) -> ExpandedWeights:
    """The expanded weights from ``source`` to the later layer ``target`` (see the module docstring).

    Args:
        model: The model.
        source: Layer A (a module whose output is one tensor).
        target: Layer B, after A (``""``/``"output"``: the model's output).
        size: The input (height, width) to evaluate at (default: the model's, enlarged when the span reaches
            the edge of A's grid).
        max_scale: How many times the model's input size the input may grow to.

    Raises:
        UnknownLayerError: a layer does not exist, A does not run before B, or B does not depend on A.
    """
    loaded = coerce_model(model)
    a_ref, b_ref = resolve_layer(loaded, source), resolve_layer(loaded, target)
    if a_ref.name == OUTPUT:
        raise UnknownLayerError(f"The source of expanded weights must be a layer before the output of {loaded.name}")
    base = loaded.preprocessing.input_shape
    shape: tuple[int, int] = (size, size) if isinstance(size, int) else (tuple(size) if size else base)  # type: ignore[assignment]
    if size is None:
        shape = _fitting_size(loaded, a_ref, b_ref, base, max_scale)
    jacobian, centre = jacobian_rows(loaded, a_ref, b_ref, shape)
    if centre is None:  # the logits, or any output without a grid: the whole of A's grid
        return ExpandedWeights(a_ref, b_ref, jacobian, (0, 0), (0, 0), shape)
    rows, cols = _span(jacobian)
    return ExpandedWeights(a_ref, b_ref, jacobian[:, :, rows, cols].contiguous(), (rows.start, cols.start), centre,
                           shape)


def _touches(rows: slice, cols: slice, grid: tuple[int, ...]) -> bool:
    return rows.start == 0 or cols.start == 0 or rows.stop == grid[0] or cols.stop == grid[1]


def _fitting_size(model: LoadedModel, a: LayerRef, b: LayerRef, base: tuple[int, int], max_scale: int
                  ) -> tuple[int, int]:
    """The smallest input (of the base size times 1, 1.25, 1.5, ... up to ``max_scale``) at which the span of
    the Jacobian lies inside A's grid with a margin, found with one-backward probes."""
    probe, centre = jacobian_rows(model, a, b, base, probe=True)
    rows, cols = _span(probe)
    if centre is None or not _touches(rows, cols, probe.shape[2:]):
        return base
    shape, grid = base, probe.shape[2:]
    while _touches(rows, cols, grid) and shape[0] * 2 <= base[0] * max_scale:
        shape = (shape[0] * 2, shape[1] * 2)
        probe, _ = jacobian_rows(model, a, b, shape, probe=True)
        rows, cols, grid = *_span(probe), probe.shape[2:]
    if _touches(rows, cols, grid):
        return shape  # the span fills the largest input allowed
    per_pixel = grid[0] / shape[0], grid[1] / shape[1]
    for factor in (1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0):
        size = (round(base[0] * factor / 32) * 32, round(base[1] * factor / 32) * 32)
        height, width = rows.stop - rows.start + 4, cols.stop - cols.start + 4
        if size[0] * per_pixel[0] >= height and size[1] * per_pixel[1] >= width:
            return min(size, shape)
    return shape


__getattr__ = moved(__name__, {"source_calls": "filterscope.hooks"})
