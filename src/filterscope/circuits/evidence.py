"""What real images say about a connection: data-aware attribution and the causal (ablation) check.

Both run the real network (non-linearities as they are) on a unit's top exemplars, under the model's own
preprocessing, with the position of the unit's maximum in each exemplar (found here when not given).

* :func:`attribute`: for each exemplar, ``a_A * d b_unit[y*, x*] / d a_A`` summed over A's grid, per input
  channel (gradient times input; one backward pass for a whole batch of exemplars, each with its own unit and
  position); :func:`attribution` is its mean over a unit's exemplars.
* :func:`ablation_check`: zero a set of A's channels (a forward hook) and measure the drop of the unit at its
  maximum, averaged over its exemplars; the top-k inputs of each view against ``draws`` sets of k random
  inputs (uniform over A's channels, seeded). The **ratio** is a view's drop over the mean absolute drop of
  the random sets: about 1 when the view's inputs matter no more than any others, well above 1 when they
  explain the unit. All variants of all exemplars go through the truncated network in batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..hooks import Intervene, Leaf, source_calls
from ..layers import Capture, LayerRef
from ..runtime.core import ANALYSIS_BATCH
from ..zoo.model import LoadedModel, frozen

__all__ = ["AblationCheck", "attribute", "attribution", "ablation_check", "peaks", "DRAWS"]

DRAWS = 5
"""Random input sets the causal check compares with."""


@dataclass(frozen=True)
class AblationCheck:
    """The causal check of one unit (see the module docstring).

    Attributes:
        k: Inputs zeroed per set.
        baseline: The unit's mean activation at its maxima over the exemplars, nothing ablated.
        drops: Per view (``expanded``, ``attribution``): the inputs zeroed and the mean drop.
        random_sets: The random sets of inputs zeroed.
        random_drops: The mean drop for each random set.
        ratios: Per view: its drop over the mean absolute random drop.
    """

    k: int
    baseline: float
    drops: dict[str, float]
    ablated: dict[str, list[int]]
    random_sets: list[list[int]]
    random_drops: list[float]
    ratios: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"k": self.k, "baseline": self.baseline, "drops": self.drops, "ablated": self.ablated,
                "random_sets": self.random_sets, "random_drops": self.random_drops, "ratios": self.ratios}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> AblationCheck:
        return cls(int(data["k"]), float(data["baseline"]), dict(data["drops"]),  # type: ignore[arg-type, call-overload]
                   dict(data["ablated"]), list(data["random_sets"]), list(data["random_drops"]),  # type: ignore[call-overload]
                   dict(data["ratios"]))  # type: ignore[call-overload]


def _units_tensor(units: int | Sequence[int], count: int) -> torch.Tensor:
    return torch.full((count,), units, dtype=torch.long) if isinstance(units, int) else torch.tensor(list(units))


def peaks(model: LoadedModel, target: LayerRef, pixels: torch.Tensor, units: int | Sequence[int]
          ) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """Where each image's unit is largest, ``(y, x)`` in ``target``'s grid, and that largest value
    (``pixels``: (N,C,H,W) in [0,1]; a target without spatial axes: position ``(0, 0)``)."""
    chosen = _units_tensor(units, len(pixels))
    positions: list[tuple[int, int]] = []
    values: list[torch.Tensor] = []
    with frozen(model.module), torch.no_grad(), Capture(model, [target]) as capture:
        for start in range(0, len(pixels), ANALYSIS_BATCH):
            batch = pixels[start:start + ANALYSIS_BATCH].to(model.device)
            b = capture(model.preprocessing.normalize(batch))[target].float()
            rows = chosen[start:start + len(batch)].to(b.device)
            maps = b.reshape(len(batch), b.shape[1], -1)[torch.arange(len(batch)), rows]
            best, flat = maps.max(dim=1)
            width = b.shape[-1] if b.dim() == 4 else 1
            positions.extend(divmod(int(i), width) if b.dim() == 4 else (0, 0) for i in flat)
            values.append(best.cpu())
    return positions, torch.cat(values)


def _at(b: torch.Tensor, units: torch.Tensor, positions: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``b[n, units[n], y_n, x_n]`` for each row (a target without spatial axes: ``b[n, units[n]]``)."""
    rows = torch.arange(len(b), device=b.device)
    if b.dim() != 4:
        return b.reshape(len(b), -1)[rows, units.to(b.device)]
    ys = torch.tensor([p[0] for p in positions], device=b.device)
    xs = torch.tensor([p[1] for p in positions], device=b.device)
    return b[rows, units.to(b.device), ys, xs]


def attribute(model: LoadedModel, source: LayerRef, target: LayerRef, pixels: torch.Tensor,
              units: int | Sequence[int], positions: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """``(N, C_A)``: for image ``n``, activation x gradient of ``units[n]`` at ``positions[n]`` (default: its
    maximum) with respect to each channel of ``source``, summed over the grid."""
    chosen = _units_tensor(units, len(pixels))
    positions = list(positions) if positions is not None else peaks(model, target, pixels, units)[0]
    calls, out = source_calls(model, source), []
    for start in range(0, len(pixels), ANALYSIS_BATCH):
        leaf = Leaf()
        batch = pixels[start:start + ANALYSIS_BATCH].to(model.device)
        with frozen(model.module), torch.enable_grad(), Intervene(model, source, leaf, calls), \
                Capture(model, [target]) as capture:
            b = capture(model.preprocessing.normalize(batch))[target].float()
        values = _at(b, chosen[start:start + len(batch)], positions[start:start + len(batch)])
        a = leaf.tensor
        assert a is not None  # the capture of a later layer ran the source
        (grad,) = torch.autograd.grad(values.sum(), a)
        out.append((a * grad).flatten(2).sum(dim=2).detach().cpu())
    return torch.cat(out)


def attribution(model: LoadedModel, source: LayerRef, target: LayerRef, unit: int, pixels: torch.Tensor,
                positions: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """``(C_A,)``: the mean over the exemplars ``pixels`` of :func:`attribute` for one unit."""
    return attribute(model, source, target, pixels, unit, positions).mean(dim=0)


def _masks(output: torch.Tensor, sets: Sequence[Sequence[int]]) -> torch.Tensor:
    """``(len(sets), C, 1, ...)``: ones, with each set's channels zero."""
    keep = torch.ones(len(sets), output.shape[1], device=output.device, dtype=output.dtype)
    for row, channels in enumerate(sets):
        keep[row, list(channels)] = 0
    return keep.reshape(*keep.shape, *([1] * (output.dim() - 2)))


def _fanned_values(model: LoadedModel, source: LayerRef, target: LayerRef, pixels: torch.Tensor, unit: int,
                   positions: Sequence[tuple[int, int]], sets: list[list[int]]) -> torch.Tensor:
    """:func:`_ablated_values`, the network before ``source`` run once per image: the hook fans each image's
    activation out into one masked copy per set, so only the layers after ``source`` run once per set."""
    calls, values = source_calls(model, source), torch.zeros(len(sets), len(pixels))
    per_batch = max(1, ANALYSIS_BATCH * 4 // len(sets))

    def fan(output: torch.Tensor) -> torch.Tensor:  # (n, C, ...) -> (n * S, C, ...), image-major
        fanned = output[:, None] * _masks(output, sets)[None]
        return fanned.reshape(-1, *output.shape[1:])

    with frozen(model.module), torch.no_grad(), Intervene(model, source, fan, calls), \
            Capture(model, [target]) as capture:
        for start in range(0, len(pixels), per_batch):
            batch = pixels[start:start + per_batch].to(model.device)
            b = capture(model.preprocessing.normalize(batch))[target].float()
            if b.shape[0] != len(batch) * len(sets):
                raise RuntimeError("the batch did not fan out")
            where = [positions[start + i] for i in range(len(batch)) for _ in sets]
            found = _at(b, torch.full((len(where),), unit), where).cpu().reshape(len(batch), len(sets))
            values[:, start:start + len(batch)] = found.T
    return values


def _fans_out(model: LoadedModel, source: LayerRef, target: LayerRef, pixels: torch.Tensor, unit: int,
              positions: Sequence[tuple[int, int]]) -> bool:
    """Whether the layers after ``source`` accept a batch larger than the one that entered the network (no
    connection from before ``source`` that fails to broadcast, no batch size kept from the start), checked on
    two images against the plain way (a connection from before ``source`` meets a batch of another size:
it fails to broadcast for more than one image, so a wrong fan-out cannot go unnoticed)."""
    sets: list[list[int]] = [[], [0]]
    try:
        fanned = _fanned_values(model, source, target, pixels[:2], unit, positions[:2], sets)
    except RuntimeError:  # a shape mismatch after the fan-out: this network needs the plain way
        return False
    plain = _plain_values(model, source, target, pixels[:2], unit, positions[:2], sets)
    return torch.allclose(fanned, plain, rtol=1e-4, atol=1e-5)


def _ablated_values(model: LoadedModel, source: LayerRef, target: LayerRef, pixels: torch.Tensor, unit: int,
                    positions: Sequence[tuple[int, int]], sets: list[list[int]]) -> torch.Tensor:
    """``(len(sets), N)``: the unit at each image's position with each set of source channels zeroed."""
    if len(sets) > 2 and _fans_out(model, source, target, pixels, unit, positions):
        return _fanned_values(model, source, target, pixels, unit, positions, sets)
    return _plain_values(model, source, target, pixels, unit, positions, sets)


def _plain_values(model: LoadedModel, source: LayerRef, target: LayerRef, pixels: torch.Tensor, unit: int,
                  positions: Sequence[tuple[int, int]], sets: list[list[int]]) -> torch.Tensor:
    """:func:`_ablated_values`, every (set, image) pair through the whole truncated network, in batches."""
    n, calls = len(pixels), source_calls(model, source)
    jobs = [(s, i) for s in range(len(sets)) for i in range(n)]
    values = torch.zeros(len(sets), n)
    with frozen(model.module), torch.no_grad():
        for start in range(0, len(jobs), ANALYSIS_BATCH):
            chunk = jobs[start:start + ANALYSIS_BATCH]
            masked = [sets[s] for s, _ in chunk]

            def zero(output: torch.Tensor, masked: list[list[int]] = masked) -> torch.Tensor:
                return output * _masks(output, masked)

            batch = pixels[[i for _, i in chunk]].to(model.device)
            with Intervene(model, source, zero, calls), Capture(model, [target]) as capture:
                b = capture(model.preprocessing.normalize(batch))[target].float()
            found = _at(b, torch.full((len(chunk),), unit), [positions[i] for _, i in chunk]).cpu()
            for (s, i), v in zip(chunk, found):
                values[s, i] = v
    return values


def ablation_check(model: LoadedModel, source: LayerRef, target: LayerRef, unit: int, pixels: torch.Tensor,
                   views: Mapping[str, Sequence[int]], *, channels: int, draws: int = DRAWS, seed: int = 0,
                   positions: Sequence[tuple[int, int]] | None = None) -> AblationCheck:
    """The causal check of ``unit`` of ``target`` over its exemplars ``pixels`` (module docstring).

    Args:
        views: Per view, the input channels of ``source`` to zero (the top k by that view).
        channels: How many channels ``source`` has (the random sets draw from them).
        draws: How many random sets of the same size.
        seed: Seed of the random sets.
    """
    positions = list(positions) if positions is not None else peaks(model, target, pixels, unit)[0]
    k = max((len(v) for v in views.values()), default=0)
    generator = torch.Generator().manual_seed(seed)
    random_sets = [torch.randperm(channels, generator=generator)[:k].tolist() for _ in range(draws)]
    names = list(views)
    sets = [[], *[list(views[name]) for name in names], *random_sets]
    values = _ablated_values(model, source, target, pixels, unit, positions, sets).mean(dim=1)
    baseline = float(values[0])
    drops = {name: baseline - float(values[1 + j]) for j, name in enumerate(names)}
    random_drops = [baseline - float(v) for v in values[1 + len(names):]]
    scale = sum(abs(d) for d in random_drops) / max(len(random_drops), 1)
    floor = 1e-6 * max(abs(baseline), 1e-12)
    ratios = {name: drop / max(scale, floor) for name, drop in drops.items()}
    return AblationCheck(k, baseline, drops, {name: list(views[name]) for name in names}, random_sets, random_drops,
                         ratios)
