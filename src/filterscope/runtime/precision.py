"""``--precision auto``: render in bfloat16 only where a timed probe finds it faster on this hardware.

bfloat16 autocast runs the network 1.3-2.5x faster on CPUs with AMX or AVX512-BF16 and on recent GPUs,
and 12-18x *slower* on CPUs without them (benchmarks/RESULTS.md). CPU flags alone do not say by how
much, or whether a given network gains at all, so :func:`choose_precision` decides by measuring:

1. an explicit ``fp32`` or ``bf16`` is used as asked;
2. hardware without bfloat16 (a CPU whose flags have neither ``amx_bf16`` nor ``avx512_bf16``, a GPU
   without bf16 support, other devices) renders fp32 without a probe;
3. otherwise a **probe**: a forward and backward pass of the truncated network on the render's real
   shape (the largest transformed image of the schedule, a batch of :data:`PROBE_BATCH`) in each precision,
   after a warm-up, alternately, best of three. bf16 is chosen when it is at least
   :data:`MARGIN` times faster. A network whose fp32 step takes under :data:`TRIVIAL_SECONDS` is not
   probed in bf16 at all (nothing to gain worth the rounding).

Probe results are cached per machine, torch version, thread count, model and shape, in memory and in
``precision-probes.json`` under the cache folder (``$FILTERSCOPE_CACHE_DIR``, else
``$XDG_CACHE_HOME/filterscope``, else ``~/.cache/filterscope``), so a probe runs once per configuration.
The choice and its reason are recorded in each result's metadata (``precision``, ``precision_choice``)
and said on the CLI's runtime line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..arguments import checked
from ..files import cache_dir
from ..layers import LayerRef
from ..zoo.model import LoadedModel, coerce_model
from .core import Forward, Runtime, cpu_bf16_flags, cpu_description, format_size

__all__ = ["PrecisionChoice", "choose_precision", "probe_timings", "cache_dir", "MARGIN", "TRIVIAL_SECONDS",
           "PROBE_BATCH"]

PROBE_BATCH = 4
"""Images per probe step (the CPU's fp32 batch limit: what most renders run)."""
MARGIN = 1.15
"""bf16 must be at least this many times faster than fp32 in the probe to be chosen."""
TRIVIAL_SECONDS = 0.02
"""An fp32 probe step faster than this is not worth bf16's rounding: fp32 without probing bf16."""
CACHE_FILE = "precision-probes.json"


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a render runs in, and why.

    Attributes:
        precision: ``fp32`` or ``bf16``.
        reason: In words, for the runtime line and the metadata.
        timings: Seconds per probe step by precision (``None`` without a probe).
        cached: Whether the timings came from the cache.
    """

    precision: str
    reason: str
    timings: dict[str, float] | None = None
    cached: bool = False


Probe = Callable[[LoadedModel, Sequence[LayerRef], tuple[int, int], int, Runtime], dict[str, float]]
_MEMORY: dict[str, tuple[dict[str, float], bool]] = {}
"""This process's decisions: timings, and whether they came from the cache file."""


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{cpu_description()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def _key(model: LoadedModel, layers: Sequence[LayerRef], shape: tuple[int, int], batch: int, runtime: Runtime) -> str:
    parameters = sum(p.numel() for p in model.module.parameters())
    return json.dumps({"machine": _machine(model.device), "model": model.name, "parameters": parameters,
                       "layers": sorted(str(x) for x in layers), "shape": list(shape), "batch": batch,
                       "channels_last": runtime.wants_channels_last(model.module)}, sort_keys=True)


def _read_cache(path: Path) -> dict[str, dict[str, float]]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return data
    return {}  # missing or damaged: measured again and rewritten


def _write_cache(path: Path, key: str, timings: dict[str, float]) -> None:
    """Add one entry; a cache that cannot be written only costs a probe next time."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**_read_cache(path), key: timings}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".probe-", suffix=".part")
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)


def probe_timings(model: LoadedModel, layers: Sequence[LayerRef], shape: tuple[int, int], batch: int,
                  runtime: Runtime) -> dict[str, float]:
    """Seconds of one forward and backward pass of the truncated network on a ``(batch, C, *shape)`` input,
    per precision: ``{"fp32": s}`` when fp32 is already trivially fast, else ``{"fp32": s, "bf16": s}``."""
    x = torch.rand(batch, model.preprocessing.channels, *shape, generator=torch.Generator().manual_seed(0))
    x = x.to(model.device)
    forwards = {p: Forward(model, layers, dataclasses.replace(runtime, precision=p), fold=runtime.fold)
                for p in ("fp32", "bf16")}

    def step(precision: str) -> float:
        image = x.clone().requires_grad_(True)
        start = time.perf_counter()
        activations = forwards[precision](image)
        sum(a.float().mean() for a in activations.values()).backward()  # type: ignore[union-attr]
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        return time.perf_counter() - start

    best: dict[str, float] = {}
    with forwards["fp32"]:
        step("fp32")  # warm-up
        best["fp32"] = step("fp32")
    if best["fp32"] < TRIVIAL_SECONDS:
        return best
    with forwards["bf16"]:
        step("bf16")  # warm-up: the bf16 copies of the weights, the kernels' first use
        best["bf16"] = step("bf16")
    for _ in range(2):
        for precision in ("fp32", "bf16"):
            with forwards[precision]:
                best[precision] = min(best[precision], step(precision))
    return best


def _bf16_hardware(device: torch.device) -> str | None:
    """Why this device cannot gain from bf16, or None when it might (then the probe decides)."""
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else f"{torch.cuda.get_device_name(device)} has no bf16 support"
    if device.type != "cpu":
        return f"bf16 is probed on CPUs and CUDA GPUs only, not {device.type}"
    flags = cpu_bf16_flags()
    if flags is not None and not flags:
        return "this CPU has neither AMX nor AVX512-BF16, where bf16 runs many times slower"
    return None


@checked
def choose_precision(model: LoadedModel, layers: Sequence[LayerRef], shape: tuple[int, int], batch: int,
                     runtime: Runtime, *, probe: Probe | None = None) -> PrecisionChoice:
    """The precision to render in: ``runtime.precision`` unless it is ``auto``; then see the module docstring.

    ``shape`` is the network's largest input ``(height, width)`` in the render, ``batch`` its rows.
    ``probe`` replaces :func:`probe_timings` (tests give it made-up timings).
    """
    model = coerce_model(model)
    if runtime.precision != "auto":
        return PrecisionChoice(runtime.precision, "as asked")
    unsupported = _bf16_hardware(model.device)
    if unsupported:
        return PrecisionChoice("fp32", f"auto: {unsupported}")
    key = _key(model, layers, shape, batch, runtime)
    if probe is None and key in _MEMORY:  # already decided in this process: the same words again
        timings, cached = _MEMORY[key]
    else:
        path = cache_dir() / CACHE_FILE
        stored = _read_cache(path) if probe is None else {}
        cached = key in stored
        timings = stored[key] if cached else (probe or probe_timings)(model, layers, shape, batch, runtime)
        if probe is None:
            if not cached:
                _write_cache(path, key, timings)
            _MEMORY[key] = (timings, cached)
    where = f"a {'cached ' if cached else ''}probe at {format_size(shape)} px, batch {batch}"
    fp32 = timings["fp32"]
    if "bf16" not in timings:
        return PrecisionChoice("fp32", f"auto: an fp32 step takes {fp32 * 1000:.0f} ms in {where}, too little to "
                                       "gain from bf16", timings, cached)
    speedup = fp32 / max(timings["bf16"], 1e-9)
    if speedup >= MARGIN:
        return PrecisionChoice("bf16", f"auto: bf16 {speedup:.1f}x faster than fp32 in {where}", timings, cached)
    return PrecisionChoice("fp32", f"auto: bf16 {speedup:.2f}x the speed of fp32 in {where} (needs {MARGIN}x)",
                           timings, cached)
