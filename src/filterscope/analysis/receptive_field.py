"""Where in the input a unit of a layer looks: its receptive field, measured from the network itself.

The field of an output position is the set of input pixels its value depends on. It is measured, not
guessed from a table of kernel sizes: the gradient of the layer's output at one position (summed over
channels and over a few random inputs, so that no ReLU can hide a pixel) with respect to the input is
non-zero exactly on that set. Two neighbouring positions give the stride; their boxes, the size and the
offset. A field larger than the input is measured on an input twice as large (convolutional layers run at
any size); a field larger even than that, or a layer that mixes the whole image (global pooling,
attention, a flattened output), is treated as the whole input: a crop of it would be the whole image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..arguments import checked
from ..layers import Capture, LayerRef, resolve_layer
from ..zoo.model import LoadedModel, coerce_model, frozen

__all__ = ["ReceptiveField", "receptive_field"]


@dataclass(frozen=True)
class ReceptiveField:
    """The input box that an output position ``(y, x)`` of a layer sees.

    The box of position ``(y, x)`` starts at ``(offset_y + y * stride_y, offset_x + x * stride_x)`` and is
    ``height`` x ``width`` input pixels (before clipping to the input). ``whole`` marks a layer whose
    every position sees the whole input.
    """

    height: int
    width: int
    stride_y: float
    stride_x: float
    offset_y: float
    offset_x: float
    whole: bool = False

    def box(self, y: int, x: int, input_shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of position ``(y, x)``, clipped to an input of ``(height, width)``."""
        height, width = input_shape
        if self.whole:
            return 0, 0, width, height
        top = round(self.offset_y + y * self.stride_y)
        left = round(self.offset_x + x * self.stride_x)
        return (max(left, 0), max(top, 0), min(left + self.width, width), min(top + self.height, height))

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ReceptiveField:
        return cls(**data)


def _support(model: LoadedModel, ref: LayerRef, shape: tuple[int, int], positions: list[tuple[int, int]],
             samples: int = 2) -> tuple[tuple[int, int], list[tuple[int, int, int, int] | None]]:
    """The layer's spatial size on an input of ``shape``, and for each position the bounding box
    ``(x0, y0, x1, y1)`` of the input pixels with a non-zero gradient (None when there are none)."""
    generator = torch.Generator().manual_seed(0)
    channels = model.preprocessing.channels
    x = torch.randn(samples, channels, *shape, generator=generator).to(model.device).requires_grad_(True)
    boxes: list[tuple[int, int, int, int] | None] = []
    grid = (1, 1)
    with frozen(model.module), torch.enable_grad(), Capture(model, [ref]) as capture:
        for y, x_pos in positions:
            act = capture(x)[ref]
            grid = (int(act.shape[2]), int(act.shape[3]))
            if not (0 <= y < grid[0] and 0 <= x_pos < grid[1]):
                boxes.append(None)
                continue
            (grad,) = torch.autograd.grad(act[:, :, y, x_pos].sum(), x)
            mask = grad.abs().sum(dim=(0, 1)) > 0
            rows = torch.nonzero(mask.any(dim=1)).flatten()
            cols = torch.nonzero(mask.any(dim=0)).flatten()
            if rows.numel() == 0:
                boxes.append(None)
            else:
                boxes.append((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))
    return grid, boxes


def _layer_grid(model: LoadedModel, ref: LayerRef, shape: tuple[int, int]) -> tuple[int, ...]:
    with torch.no_grad(), frozen(model.module), Capture(model, [ref]) as capture:
        act = capture(torch.zeros(1, model.preprocessing.channels, *shape, device=model.device))[ref]
    return tuple(act.shape[2:])


@checked
def receptive_field(model: LoadedModel | torch.nn.Module, layer: str | LayerRef, *,
                    max_scale: int = 2) -> ReceptiveField:
    """The receptive field of ``layer``'s positions (see the module docstring).

    It is measured at the model's input size, then on inputs 2, 4, ... ``max_scale`` times larger while
    the field of the central position still touches the input's border; a field that touches it even
    then (or a layer without a 2-D spatial output) is ``whole``, with the stride of the layer's grid
    (measuring deeper fields exactly costs a backward pass through a ``max_scale``-times larger input:
    50 s for EfficientNet-Lite0's last block at 8x, for crops that would be the whole image anyway).
    """
    model = coerce_model(model)
    ref = resolve_layer(model, layer)
    height, width = model.preprocessing.input_shape
    whole = ReceptiveField(height, width, float(height), float(width), 0.0, 0.0, whole=True)
    if len(_layer_grid(model, ref, (height, width))) != 2:
        return whole
    scale = 1
    while scale <= max_scale:
        shape = (height * scale, width * scale)
        try:
            grid = _layer_grid(model, ref, shape)
        except RuntimeError:  # the model does not run at this size
            break
        cy, cx = grid[0] // 2, grid[1] // 2
        ny, nx = min(cy + 1, grid[0] - 1), min(cx + 1, grid[1] - 1)
        _, (centre, neighbour) = _support(model, ref, shape, [(cy, cx), (ny, nx)])
        if centre is None:
            return whole
        x0, y0, x1, y1 = centre
        inside = x0 > 0 and y0 > 0 and x1 < shape[1] and y1 < shape[0]
        if inside and neighbour is not None:
            stride_y = float(neighbour[1] - y0) if ny != cy else shape[0] / grid[0]
            stride_x = float(neighbour[0] - x0) if nx != cx else shape[1] / grid[1]
            if (ny != cy and neighbour[1] == 0) or (nx != cx and neighbour[0] == 0):  # neighbour clipped
                stride_y, stride_x = shape[0] / grid[0], shape[1] / grid[1]
            return ReceptiveField(y1 - y0, x1 - x0, stride_y, stride_x, y0 - cy * stride_y, x0 - cx * stride_x)
        scale *= 2
    grid = _layer_grid(model, ref, (height, width))
    return ReceptiveField(height, width, height / grid[0], width / grid[1], 0.0, 0.0, whole=True)
