"""Batch norms folded into the convolutions before them, on a copy of the network, while filterscope renders.

An eval-mode batch norm is an affine map per channel, ``(x - mean) / sqrt(var + eps) * gamma + beta``; after
a convolution whose output nothing else reads, it folds into the convolution's weights and bias
(:func:`torch.nn.utils.fusion.fuse_conv_bn_weights`, computed in float64): the same function, one
memory-bound pass fewer per layer, forward and backward. On EfficientNet-Lite0 (a batch norm after each of
its 49 convolutions up to ``_blocks.15``) that is a third of a render step's time (benchmarks/step_rate.py).
The fold itself is exact algebra, computed in float64: a float64 network folds to the same function to
float64 rounding (tests/runtime/test_fusion.py). A float32 network's folded weights are rounded to float32 once, so
its activations err against float64 1.1-1.3x as much as the unfolded float32 network's own (both ~1.5e-6 of
their norm on Lite0's ``_blocks.15``). Input gradients of either float32 network are not compared entry by
entry: a rounding-sized change flips a ReLU somewhere, which moves the gradient by ~0.1 % of its norm, so
which of two float32 paths lands nearer float64 is a coin toss decided by such flips (measured: either one,
by up to 17x, with the instruction set and the input).

Which pairs fold is found by running the network, not assumed from module names. A probe forward pass (one
image at the model's input size, with the graph recorded) notes every module call; a ``BatchNorm2d`` folds
into the ``Conv2d`` before it when

* each is called exactly once (no weight sharing), the batch norm uses running statistics;
* the batch norm's input *is* the convolution's output: its autograd node's input is the convolution's node
  (an in-place change in between would put another node there);
* nothing else reads the convolution's output: that node has one consumer in the whole graph;
* no captured layer reads it (the convolution's output, the batch norm's input): a folded network answers
  for the batch norm's output, never for what is gone.

The folded copy is then checked against the original on the probe input (the outputs agree to float
rounding, or nothing is folded), so a convolution whose ``forward`` does more than convolve (a weight
standardization) is never folded wrongly.

The caller's module is never changed: the folded network is a deep copy, kept for the next batch while the
original's parameters and buffers are unchanged (same tensors, same version counters), and dropped with it.
torch.fx's fusion would need the network to trace symbolically (TensorFlow "same" padding reads the input's
shape) and would inline the containers whose hooks name the layers; torch.ao's ``fuse_modules`` wants the pairs
listed by hand: hence this module.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..layers import LayerRef, _StopForward
from ..zoo.model import LoadedModel, frozen

__all__ = ["Folding", "fold_batch_norms"]

_TOLERANCE = 1e-3
"""The folded network's probe output may differ from the original's by this share of its largest value."""


@dataclass(frozen=True)
class Folding:
    """A network with its batch norms folded, and which.

    Attributes:
        model: The folded copy (the original :class:`LoadedModel` when nothing folds).
        pairs: ``(convolution, batch norm)`` module names, folded in this order.
        reason: Why nothing folded, when ``pairs`` is empty (for the metadata).
    """

    model: LoadedModel
    pairs: tuple[tuple[str, str], ...] = ()
    reason: str = ""


_BUSY = "not folded: the network is being run by another capture"
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[object, Folding]] = weakref.WeakKeyDictionary()


def _signature(module: nn.Module) -> tuple[tuple[int, int, float, float], ...]:
    """What must stay the same for a folded copy to stay true: each parameter and buffer, its version and its
    values (a float64 sum and norm: ``param.data = ...`` keeps the tensor and its version; a change of memory
    format, which a render makes around its batches, keeps the values and so the copy)."""
    with torch.no_grad():
        return tuple((id(t), t._version, *_sum_and_norm(t)) for t in [*module.parameters(), *module.buffers()])


def _sum_and_norm(t: torch.Tensor) -> tuple[float, float]:
    wide = t if t.is_floating_point() else t.double()  # integer buffers (num_batches_tracked) too
    return float(torch.sum(wide, dtype=torch.float64)), float(torch.linalg.vector_norm(wide, dtype=torch.float64))


def fold_batch_norms(model: LoadedModel, keep: Iterable[LayerRef] = ()) -> Folding:
    """``model`` with every foldable batch norm folded into its convolution, on a copy (see the module
    docstring); ``keep``: layers that will be captured, whose inputs must stay as they are.

    The copy is cached per module and ``keep``: asking again for an unchanged network costs nothing."""
    keep_key = tuple(sorted({(ref.name, ref.port) for ref in keep}))
    key = (_signature(model.module), keep_key, model.device)
    cached = _CACHE.get(model.module, {})
    if key in cached:
        return replace(cached[key], model=replace(model, module=cached[key].model.module)) \
            if cached[key].pairs else Folding(model, (), cached[key].reason)
    with frozen(model.module):
        folding = _fold(model, {name for name, port in keep_key if port == "in"},
                        {name for name, port in keep_key if port == "out"})
    if folding.reason != _BUSY:  # (nested: the next call, alone, folds)
        _CACHE[model.module] = {key: folding}  # the newest only: an older signature will not come back
    return folding


def _fold(model: LoadedModel, read_in: set[str], read_out: set[str]) -> Folding:
    shape = (1, model.preprocessing.channels, *model.preprocessing.input_shape)
    dtype = next((p.dtype for p in model.module.parameters() if p.is_floating_point()), torch.float32)
    probe = torch.rand(shape, generator=torch.Generator().manual_seed(0))  # the caller's RNG untouched
    probe = probe.to(model.device, dtype)  # a float64 network is probed (and folded) in float64
    try:
        pairs = _foldable(model.module, probe)
    except _StopForward:  # another Capture is running this module (nested Forwards): its hooks stop the probe
        return Folding(model, (), _BUSY)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        return Folding(model, (), f"not folded: the probe failed ({str(exc).splitlines()[0]})")
    pairs = [(conv, bn) for conv, bn in pairs if conv not in read_out and bn not in read_in]
    if not pairs:
        return Folding(model, (), "no batch norm to fold")
    try:
        folded = copy.deepcopy(model.module)
    except (RuntimeError, TypeError) as exc:  # e.g. a module holding something that cannot be copied
        return Folding(model, (), f"not folded: the network cannot be copied ({exc})")
    for conv_name, bn_name in pairs:
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        conv.weight, conv.bias = _folded_weights(conv, bn)
        parent, _, child = bn_name.rpartition(".")
        setattr(folded.get_submodule(parent), child, nn.Identity())
    folded.requires_grad_(False)
    with torch.no_grad():
        expected, got = _output(model.module(probe)), _output(folded(probe))
    if expected is None or got is None or expected.shape != got.shape:
        return Folding(model, (), "not folded: the network's output is not one tensor to compare")
    scale = float(expected.abs().max()) + 1e-12
    if not float((expected - got).abs().max()) <= _TOLERANCE * scale:
        return Folding(model, (), "not folded: the folded network computes something else")
    return Folding(replace(model, module=folded), tuple(pairs))


def _folded_weights(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[nn.Parameter, nn.Parameter]:
    """``fuse_conv_bn_weights`` in float64 on the CPU, cast back to the convolution's dtype: each folded weight
    is rounded once (folding in float32 would round each product and quotient on the way as well)."""
    def wide(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to("cpu", torch.float64)

    assert bn.running_mean is not None and bn.running_var is not None  # _foldable keeps tracked stats only
    weight, bias = fuse_conv_bn_weights(
        wide(conv.weight), None if conv.bias is None else wide(conv.bias), wide(bn.running_mean),
        wide(bn.running_var), bn.eps, None if bn.weight is None else wide(bn.weight),
        None if bn.bias is None else wide(bn.bias))
    like = conv.weight
    return (nn.Parameter(weight.to(like.device, like.dtype), requires_grad=False),
            nn.Parameter(bias.to(like.device, like.dtype), requires_grad=False))


def _tensors(value: object) -> list[torch.Tensor]:
    """The network's output tensors (a tensor, or those of a tuple, list or dict; none if it holds others)."""
    if isinstance(value, torch.Tensor):
        return [value]
    parts = list(value.values()) if isinstance(value, dict) else list(value) if isinstance(value, (tuple, list)) \
        else []
    return parts if parts and all(isinstance(p, torch.Tensor) for p in parts) else []


def _output(value: object) -> torch.Tensor | None:
    """The network's output as one flat float tensor, to compare."""
    tensors = _tensors(value)
    return torch.cat([t.detach().float().flatten() for t in tensors]) if tensors else None


def _foldable(module: nn.Module, probe: torch.Tensor) -> list[tuple[str, str]]:
    """``(conv, bn)`` names that fold, found on one forward pass of ``probe`` (see the module docstring)."""
    calls: dict[str, int] = {}
    conv_nodes: dict[object, str] = {}  # a convolution's output node → its name
    bn_inputs: dict[str, object] = {}  # a batch norm → the node of its input

    def hook(name: str, child: nn.Module) -> Callable[[nn.Module, tuple[object, ...], object], None]:
        def record(_module: nn.Module, args: tuple[object, ...], output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(output, torch.Tensor) and output.grad_fn is not None:
                if isinstance(child, nn.Conv2d):
                    conv_nodes[output.grad_fn] = name
                else:
                    bn_inputs[name] = output.grad_fn.next_functions[0][0] if output.grad_fn.next_functions else None
        return record

    candidates = {name: child for name, child in module.named_modules()
                  if isinstance(child, nn.Conv2d) or (isinstance(child, nn.BatchNorm2d) and child.track_running_stats
                                                      and child.running_mean is not None)}
    handles = [child.register_forward_hook(hook(name, child)) for name, child in candidates.items()]
    try:
        with torch.enable_grad():
            roots = [t.grad_fn for t in _tensors(module(probe.requires_grad_(True))) if t.grad_fn is not None]
    finally:
        for handle in handles:
            handle.remove()
    consumers = _consumers(roots)
    pairs = []
    for bn, node in bn_inputs.items():
        conv = conv_nodes.get(node)
        if conv is not None and calls.get(conv) == 1 and calls.get(bn) == 1 and consumers.get(node) == 1:
            pairs.append((conv, bn))
    return pairs


def _consumers(roots: Sequence[object]) -> dict[object, int]:
    """How many edges of the autograd graph under ``roots`` (the outputs' nodes) lead to each node; an output
    counts as a consumer of its own node."""
    counts: dict[object, int] = dict.fromkeys(roots, 1)
    seen, stack = set(roots), list(roots)
    while stack:
        node = stack.pop()
        for parent, _ in getattr(node, "next_functions", ()):
            if parent is None:
                continue
            counts[parent] = counts.get(parent, 0) + 1
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return counts
