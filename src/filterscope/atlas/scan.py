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
from ..runtime import ANALYSIS_BATCH, Forward, Runtime, prefetch
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

    for done, _settled in scan(model, refs, shard.items, shard.fit, shard.runtime, on_batch, on_image,
                               {ref: spec for ref, spec in specs.items() if spec is not None}):
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


def scan(loaded: LoadedModel, refs: Sequence[LayerRef], items: Iterable[tuple[int, str | Path]], fit: str,
         runtime: Runtime, on_batch: Callable[[dict[LayerRef, torch.Tensor], torch.Tensor,
                                               dict[LayerRef, SampleRows]], None],
         on_image: Callable[[int, Placement | None, Exception | None], None],
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
    samples = samples or {}
    attributed = [ref for ref, spec in samples.items() if spec.classes > 0] if loaded.categories else []
    out = resolve_layer(loaded, OUTPUT) if attributed else None
    # one layer sampled at one position per image: forward-mode attribution to every class (maps.samples)
    tangents = (Tangents(loaded, attributed[0], samples[attributed[0]])
                if len(attributed) == 1 and samples[attributed[0]].positions == "random" else None)
    taps = Taps(loaded, [] if tangents is not None else attributed)

    def run(forward: Forward) -> None:
        indices = torch.tensor([i for i, _ in pending])
        batch = torch.stack([p for _, p in pending]).to(loaded.device)
        top: torch.Tensor | None = None
        grads: list[list[torch.Tensor]] = [[] for _ in attributed]
        every: torch.Tensor | None = None
        if tangents is not None:
            tangents.indices = indices.tolist()
            with fwAD.dual_level():
                duals = forward(loaded.preprocessing.normalize(batch))
                if out is not None and duals[out].dim() == 2:
                    every = fwAD.unpack_dual(duals[out]).tangent
                acts = {ref: primal(act) for ref, act in duals.items()}
        else:
            with torch.set_grad_enabled(bool(attributed)):
                acts = forward(loaded.preprocessing.normalize(batch))
                if out is not None and acts[out].dim() == 2 and all(ref in taps.tensors for ref in attributed):
                    k = min(max(samples[ref].classes for ref in attributed), acts[out].shape[1])
                    top, grads = class_gradients(acts[out], [taps.tensors[ref] for ref in attributed], k)
        pending.clear()
        gradient = dict(zip(attributed, grads))
        taken = {ref: collect(acts[ref], indices.tolist(), spec, top if gradient.get(ref) else None,
                              gradient.get(ref, []), every if tangents is not None and ref in attributed else None)
                 for ref, spec in samples.items()}
        taps.tensors.clear()
        on_batch({ref: acts[ref].detach().cpu() for ref in refs}, indices, taken)

    layers = list(refs) + ([out] if out is not None and out not in refs else [])
    with torch.no_grad(), Forward(loaded, layers, runtime) as forward, taps, tangents or contextlib.nullcontext():
        for index, parts in prefetch(items, decode, ahead=ANALYSIS_BATCH * 2):
            if isinstance(parts, Exception):
                on_image(index, None, parts)
            else:
                item = decoded(*parts)
                on_image(index, item.placement, None)
                pending.append((index, item.pixels))
                if len(pending) >= ANALYSIS_BATCH:
                    run(forward)
            yield index + 1, not pending
        if pending:
            run(forward)
