"""The exemplar pass's task: a shard of the dataset through the truncated network, every unit's streaming
statistics and exemplar heaps, each image's placement, and the activation atlas's samples.

:class:`PassShard` → :func:`scan_shard` → :class:`ShardOutcome`, merged exactly and in order by the exemplar
stage (:mod:`.stages.exemplars`); the map-samples stage (:mod:`.stages.maps`) runs the same function for a pass
that ran without samples. :func:`scan` is the loop both use (and cluster workers alike).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from ..analysis.inputs import decode_image, decoded
from ..errors import FilterscopeError
from ..layers import OUTPUT, LayerRef, resolve_layer
from ..maps.samples import SampleRows, SampleSpec, Tangents, Taps, class_gradients, collect, primal
from ..runtime.core import ANALYSIS_BATCH, Forward, Runtime, prefetch
from ..zoo.model import LoadedModel
from ..zoo.preprocessing import Placement
from .exemplars import UnitTracker
from .tasks import Report, worker_name

__all__ = ["PassShard", "ShardOutcome", "scan_shard", "scan"]


@dataclass(frozen=True)
class PassShard:
    """The exemplar pass of ``layers`` (with their channel counts) over ``items``, ``(dataset index, path)``
    pairs: ``n`` exemplars per unit and kind, images fitted to the input by ``fit``."""

    layers: tuple[str, ...]
    channels: tuple[int, ...]
    items: tuple[tuple[int, str], ...]
    n: int
    fit: str
    runtime: Runtime
    samples: tuple[SampleSpec | None, ...] = ()

    @property
    def end(self) -> int:
        """The dataset index after the shard's last image."""
        return self.items[-1][0] + 1 if self.items else 0


@dataclass(frozen=True)
class ShardOutcome:
    """Per layer: the tracker's state, the per-image rows ``(indices, means, maxima)`` and the activation
    atlas's samples (``None`` where none were asked for); per image: its placement in the input ``(scale_x,
    scale_y, offset_x, offset_y)`` or why it was skipped."""

    trackers: tuple[dict[str, torch.Tensor], ...]
    rows: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]
    placements: dict[int, tuple[float, float, float, float]]
    errors: dict[int, str]
    worker: str
    samples: tuple[SampleRows | None, ...] = ()


def scan_shard(model: LoadedModel, shard: PassShard, report: Report | None = None) -> ShardOutcome:
    """The exemplar pass over one :class:`PassShard`; ``report`` receives the dataset index after each image."""
    refs = [resolve_layer(model, layer) for layer in shard.layers]
    trackers = [UnitTracker(c, shard.n) for c in shard.channels]
    rows: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in refs]
    placements: dict[int, tuple[float, float, float, float]] = {}
    errors: dict[int, str] = {}
    specs = dict(zip(refs, shard.samples))
    taken: list[list[SampleRows]] = [[] for _ in refs]

    def on_batch(acts: dict[LayerRef, torch.Tensor], indices: torch.Tensor,
                 samples: dict[LayerRef, SampleRows]) -> None:
        for k, ref in enumerate(refs):
            s = trackers[k].update(acts[ref], indices)
            rows[k].append((indices.numpy(), s.means.numpy(), s.maxima.numpy()))
            if ref in samples:
                taken[k].append(samples[ref])

    def on_image(index: int, placement: Placement | None, error: Exception | None) -> None:
        if placement is not None:
            placements[index] = (placement.scale_x, placement.scale_y, placement.offset_x, placement.offset_y)
        else:
            errors[index] = str(error)

    for done, _settled in scan(model, refs, shard.items, shard.fit, shard.runtime, on_batch=on_batch,
                               on_image=on_image,
                               samples={ref: spec for ref, spec in specs.items() if spec is not None}):
        if report is not None:
            report(done)
    joined = tuple(tuple(np.concatenate([p[i] for p in parts]) for i in range(3)) if parts else
                   (np.zeros(0, dtype=np.int64), np.zeros((0, 0)), np.zeros((0, 0))) for parts in rows)
    samples = tuple(_joined(taken[k]) if specs.get(ref) is not None else None for k, ref in enumerate(refs))
    return ShardOutcome(tuple(t.state_dict() for t in trackers), joined, placements, errors,  # type: ignore[arg-type]
                        worker_name(), samples)


def _joined(parts: list[SampleRows]) -> SampleRows | None:
    if not parts:
        return None
    return SampleRows(*(np.concatenate([getattr(p, name) for p in parts])
                        for name in ("places", "vectors", "classes", "attributions")))


OnBatch = Callable[[dict[LayerRef, torch.Tensor], torch.Tensor, dict[LayerRef, SampleRows]], None]
"""What :func:`scan` hands each batch to: the layers' activations (on the CPU), the dataset indices, the samples."""


class _Batches:
    """Runs one batch of the pass: the truncated network, the samples' class attribution (reverse mode through
    :class:`Taps`, or forward mode through :class:`Tangents` for one layer sampled at one random place per image),
    then ``on_batch``."""

    def __init__(self, loaded: LoadedModel, refs: Sequence[LayerRef], samples: dict[LayerRef, SampleSpec],
                 on_batch: OnBatch) -> None:
        self.loaded, self.refs, self.samples, self.on_batch = loaded, list(refs), samples, on_batch
        self.attributed = [ref for ref, spec in samples.items() if spec.classes > 0] if loaded.categories else []
        self.out = resolve_layer(loaded, OUTPUT) if self.attributed else None
        one = self.attributed[0] if len(self.attributed) == 1 else None
        self.tangents = Tangents(loaded, one, samples[one]) if one is not None and \
            samples[one].positions == "random" else None
        self.taps = Taps(loaded, [] if self.tangents is not None else self.attributed)
        self.layers = self.refs + ([self.out] if self.out is not None and self.out not in self.refs else [])

    def __call__(self, forward: Forward, pending: list[tuple[int, torch.Tensor]]) -> None:
        indices = torch.tensor([i for i, _ in pending])
        batch = torch.stack([p for _, p in pending]).to(self.loaded.device)
        pending.clear()
        normalized = self.loaded.preprocessing.normalize(batch)
        every: torch.Tensor | None = None
        top: torch.Tensor | None = None
        grads: list[list[torch.Tensor]] = []
        if self.tangents is not None:
            every, acts = self._forward_mode(forward, normalized, indices)
        else:
            acts, top, grads = self._reverse_mode(forward, normalized)
        gradient = dict(zip(self.attributed, grads))
        taken = {ref: collect(acts[ref], indices.tolist(), spec, top if gradient.get(ref) else None,
                              gradient.get(ref, []), every if ref in self.attributed else None)
                 for ref, spec in self.samples.items()}
        self.taps.tensors.clear()
        self.on_batch({ref: acts[ref].detach().cpu() for ref in self.refs}, indices, taken)

    def _forward_mode(self, forward: Forward, normalized: torch.Tensor,
                      indices: torch.Tensor) -> tuple[torch.Tensor | None, dict[LayerRef, torch.Tensor]]:
        assert self.tangents is not None
        self.tangents.indices = indices.tolist()
        every = None
        with fwAD.dual_level():
            duals = forward(normalized)
            if self.out is not None and duals[self.out].dim() == 2:
                every = fwAD.unpack_dual(duals[self.out]).tangent
            return every, {ref: primal(act) for ref, act in duals.items()}

    def _reverse_mode(self, forward: Forward, normalized: torch.Tensor
                      ) -> tuple[dict[LayerRef, torch.Tensor], torch.Tensor | None, list[list[torch.Tensor]]]:
        top: torch.Tensor | None = None
        grads: list[list[torch.Tensor]] = [[] for _ in self.attributed]
        with torch.set_grad_enabled(bool(self.attributed)):
            acts = forward(normalized)
            out = self.out
            if out is not None and acts[out].dim() == 2 and all(ref in self.taps.tensors for ref in self.attributed):
                k = min(max(self.samples[ref].classes for ref in self.attributed), acts[out].shape[1])
                top, grads = class_gradients(acts[out], [self.taps.tensors[ref] for ref in self.attributed], k)
        return acts, top, grads


def scan(loaded: LoadedModel, refs: Sequence[LayerRef], items: Iterable[tuple[int, str | Path]], fit: str,
         runtime: Runtime, *, on_batch: OnBatch, on_image: Callable[[int, Placement | None, Exception | None], None],
         samples: dict[LayerRef, SampleSpec] | None = None) -> Iterator[tuple[int, bool]]:
    """The exemplar pass's loop over ``(index, path)`` items: decode in a background thread, run the
    truncated network on batches of :data:`ANALYSIS_BATCH`, hand each batch's activations (on the CPU),
    dataset indices and activation-atlas samples (of the layers in ``samples``:
    :mod:`filterscope.maps.samples`) to ``on_batch``, report each image's placement (or its error) to
    ``on_image``. Attributing samples to classes runs the network to its output, with gradients from there
    back to the sampled layers only.

    Yields ``(index + 1, settled)`` after every image; ``settled`` is true when no decoded image waits for a
    batch (a safe point to checkpoint). Used by the local build and by cluster workers alike.
    """

    def decode(item: tuple[int, str | Path]) -> tuple[int, Any]:
        try:
            return item[0], decode_image(loaded, item[1], fit, None)
        except (FilterscopeError, OSError) as exc:
            return item[0], exc

    pending: list[tuple[int, torch.Tensor]] = []
    run = _Batches(loaded, refs, samples or {}, on_batch)
    with torch.no_grad(), Forward(loaded, run.layers, runtime) as forward, run.taps, \
            run.tangents or contextlib.nullcontext():
        for index, parts in prefetch(items, decode, ahead=ANALYSIS_BATCH * 2):
            if isinstance(parts, Exception):
                on_image(index, None, parts)
            else:
                item = decoded(*parts)
                on_image(index, item.placement, None)
                pending.append((index, item.pixels))
                if len(pending) >= ANALYSIS_BATCH:
                    run(forward, pending)
            yield index + 1, not pending
        if pending:
            run(forward, pending)
