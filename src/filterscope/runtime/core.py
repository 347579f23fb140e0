"""How the work runs on the hardware: precision, memory format, batch size, threads, prefetching.

The optimization loop (:mod:`filterscope.render`) and the analyses (:mod:`filterscope.analysis`) run
the network through a :class:`Forward`: the truncated forward pass of :class:`~filterscope.layers.Capture`
(it stops after the deepest layer an objective reads) in the memory format and precision that a
:class:`Runtime` asks for, always returning float32 activations, so objectives and losses are computed
in float32.

In ``fp32`` speed never changes the result: channels-last convolutions, the truncated forward pass and
batching give the same images as the plain one-image-at-a-time loop up to float rounding (tests check
this). ``bf16`` is bfloat16 autocast for the network (the loss stays float32), much faster on CPUs with
AMX or AVX512-BF16 and on recent GPUs, at the cost of slightly different images, and 12-18x *slower* on
CPUs without them. The default, ``auto``, renders in bf16 only where a short timed probe of both on the
real shapes finds bf16 faster (:mod:`filterscope.precision`); forward-only measurements (scores,
analyses, the atlas's exemplar pass) run fp32 under ``auto``, so their numbers do not depend on the
machine. ``benchmarks/speed.py`` measures all of it.

The batch size (images optimized together) is picked from a memory budget: :func:`estimate_memory`
measures what one image costs at the recipe's largest size (the tensors the backward pass keeps, found
with :func:`torch.autograd.graph.saved_tensors_hooks` on two probe forward passes, plus gradients and
the optimizer's state), and :func:`auto_batch_size` fits as many images as the budget holds, up to a
per-device limit above which batching stops paying (on a CPU, measured: bigger batches spill the
caches and are not faster per image).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from ..arguments import checked
from ..errors import InvalidRecipeError, RuntimeSettingError
from ..layers import Capture, LayerRef
from ..zoo.model import LoadedModel, frozen
from .fusion import fold_batch_norms

__all__ = ["Runtime", "Forward", "memory_format", "MemoryEstimate", "PRECISIONS", "estimate_memory", "auto_batch_size",
           "default_memory_budget", "parse_memory", "format_bytes", "format_size", "usable_cpus", "configure_threads",
           "prefetch", "proc_bytes", "BATCH_LIMITS", "ANALYSIS_BATCH", "plan_batch_size", "cpu_description",
           "cpu_bf16_flags"]

PRECISIONS = ("auto", "fp32", "bf16")

# Most images per batch, by device type and precision. Larger batches are allowed when asked for
# explicitly; automatic sizing stops here because time per image no longer falls (benchmarks/speed.py
# sweeps batch sizes 1-16 on the CPU).
BATCH_LIMITS: dict[tuple[str, str], int] = {
    ("cpu", "fp32"): 4,
    ("cpu", "bf16"): 8,
    ("cuda", "fp32"): 64,
    ("cuda", "bf16"): 128,
}

ANALYSIS_BATCH = 4
"""Default images per forward pass without gradients (analyses, scores; benchmarks/analysis_speed.py)."""


@dataclass(frozen=True)
class Runtime:
    """How to run the network; the model's own device says where.

    Attributes:
        precision: ``auto`` (the default: rendering picks ``bf16`` where a timed probe finds it faster on
            this hardware, see :mod:`filterscope.precision`; forward-only measurements run ``fp32``), ``fp32``
            (exact) or ``bf16`` (bfloat16 autocast for the network; the objective and loss stay float32).
        channels_last: Convolutions in channels-last memory format. ``None`` (default) turns it on for
            networks with 2-D convolutions: faster on CPUs (oneDNN) and for bf16 on GPUs.
        max_memory: Bytes the batch's working set may use (activations kept for the backward pass,
            gradients, images and optimizer state; not the model's weights), or a size as the CLI takes
            it (``"2G"``, ``"512M"``, see :func:`parse_memory`). ``None``: a safe share of what is free
            (:func:`default_memory_budget`).
        fold: Rendering runs a copy of the network with its eval-mode batch norms folded into the
            convolutions before them (:mod:`filterscope.fusion`): the same function, 1.6x faster on
            EfficientNet-Lite0, images equal to float rounding; the copy's weights take the network's size in
            memory once more (kept while the network is unchanged). ``False`` runs the network as it is.
            Forward-only measurements (scores, analyses) always run it as it is.
    """

    precision: str = "auto"
    channels_last: bool | None = None
    max_memory: int | str | None = None
    fold: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.max_memory, str):  # frozen: set once, here, to the parsed number of bytes
            object.__setattr__(self, "max_memory", parse_memory(self.max_memory))
        if self.precision not in PRECISIONS:
            raise RuntimeSettingError(f"Unknown precision {self.precision!r}: use auto, fp32 or bf16")
        if isinstance(self.max_memory, int) and self.max_memory <= 0:
            raise RuntimeSettingError(f"max_memory must be positive (got {self.max_memory} bytes)")

    def wants_channels_last(self, module: torch.nn.Module) -> bool:
        """Whether ``module`` runs channels-last: unless turned off, when it has 2-D convolutions."""
        return self.channels_last is not False and any(p.dim() == 4 for p in module.parameters())

    def memory_budget(self, device: torch.device) -> int:
        """The budget in bytes: ``max_memory``, or the default share of what ``device`` has free."""
        if isinstance(self.max_memory, int):
            return self.max_memory
        return default_memory_budget(device)

    def describe(self, why: str = "") -> str:
        """``bf16, channels-last (auto)``; ``why`` follows the precision."""
        layout = {None: "channels-last (auto)", True: "channels-last", False: "NCHW"}[self.channels_last]
        return f"{self.precision}{why}, {layout}"


DEFAULT_RUNTIME = Runtime()


@contextlib.contextmanager
def memory_format(model: LoadedModel, runtime: Runtime | None = None) -> Iterator[None]:
    """Put the model's convolution weights in channels-last format (when the runtime wants it) for the
    duration; a no-op when they already are. Wrap a long job in it once: converting costs a copy of the
    weights (30 ms for ResNet34 on 2 cores), which per batch of one would add up."""
    runtime = runtime or DEFAULT_RUNTIME
    convert = (runtime.wants_channels_last(model.module)
               and next(p for p in model.module.parameters() if p.dim() == 4).is_contiguous())
    if convert:
        model.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in the stubs
    try:
        yield
    finally:
        if convert:
            model.module.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]


@contextlib.contextmanager
def _tf32_off() -> Iterator[None]:
    """fp32 means fp32 on a GPU too: no TF32 convolutions or matmuls (cuDNN's are on by default)."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class Forward:
    """The truncated network, run as a :class:`Runtime` says; a context manager around :class:`Capture`.

    ::

        with Forward(model, layers, runtime) as forward:
            activations = forward(normalized)    # {LayerRef: float32 (B,C,H,W)}

    While it is open the model's weights are in channels-last format (when that is on); they are put
    back when it closes.
    """

    def __init__(self, model: LoadedModel, layers: Sequence[LayerRef], runtime: Runtime | None = None, *,
                 fold: bool = False) -> None:
        self.model = self.original = model
        self.runtime = runtime or DEFAULT_RUNTIME
        self.layers, self.fold = list(layers), fold
        self.folded: tuple[tuple[str, str], ...] = ()
        self.capture = Capture(model, self.layers)
        device = model.device
        self.channels_last = self.runtime.wants_channels_last(model.module)
        self._autocast = self.runtime.precision == "bf16"
        if self._autocast and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise RuntimeSettingError(f"Device {device} does not support bfloat16: use --precision fp32")
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Forward:
        self._stack.enter_context(frozen(self.original.module))
        if self.model.device.type == "cuda" and not self._autocast:
            self._stack.enter_context(_tf32_off())
        if self.fold:  # a folded copy runs instead (filterscope.fusion); the caller's module stays as it is
            folding = fold_batch_norms(self.original, self.layers)
            self.model, self.folded = folding.model, folding.pairs
        if self.capture.model is not self.model:  # the capture hooks the network that runs (folded or not)
            self.capture = Capture(self.model, self.layers)
        self._stack.enter_context(memory_format(self.model, self.runtime))
        self._stack.enter_context(self.capture)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self.model = self.original

    def __call__(self, x: torch.Tensor) -> dict[LayerRef, torch.Tensor]:
        """Activations of the requested layers for the normalized batch ``x``, as float32."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self._autocast):
            captured = self.capture(x)
        return {ref: act.float() for ref, act in captured.items()}


# ------------------------------------------------------------------------------------------ memory
@dataclass(frozen=True)
class MemoryEstimate:
    """What a batch costs at one input size.

    Attributes:
        per_image: Bytes each image adds (kept activations, their gradients, image and optimizer state).
        fixed: Bytes a batch costs whatever its size (e.g. bf16 copies of the weights).
        size: The input side, px, it was measured at.
    """

    per_image: int
    fixed: int
    size: int | tuple[int, int]

    def total(self, batch: int) -> int:
        return self.fixed + batch * self.per_image

    def fits(self, budget: int) -> int:
        """How many images fit in ``budget`` bytes (0 when not even one)."""
        return max(0, (budget - self.fixed) // self.per_image)


def _saved_bytes(forward: Forward, x: torch.Tensor, exclude: set[int]) -> tuple[int, int]:
    """Bytes of the tensors autograd keeps for the backward pass of one forward, and the largest one."""
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in exclude:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        activations = forward(x)
    # The objective reads the captured activations; count them whether or not autograd kept them.
    for act in activations.values():
        saved[act.untyped_storage().data_ptr()] = act.untyped_storage().nbytes()
    return sum(saved.values()), max(saved.values(), default=0)


def estimate_memory(model: LoadedModel, layers: Sequence[LayerRef], size: int | tuple[int, int],
                    runtime: Runtime | None = None) -> MemoryEstimate:
    """Measure the memory of one optimization step per image at ``size`` px (two probe forward passes).

    Per image: the tensors the backward pass keeps (difference between a batch of two and of one), two
    copies of the largest of them (the gradients in flight during the backward pass), and 16 image-sized
    buffers (parameterization, its gradient, Adam's moments, transforms).
    """
    runtime = runtime or DEFAULT_RUNTIME
    device = model.device
    shape = (model.preprocessing.channels, *((size, size) if isinstance(size, int) else size))
    with Forward(model, layers, runtime) as forward:
        exclude = {t.untyped_storage().data_ptr() for t in [*model.module.parameters(), *model.module.buffers()]}
        one, largest = _saved_bytes(forward, torch.zeros(1, *shape, device=device, requires_grad=True), exclude)
        two, _ = _saved_bytes(forward, torch.zeros(2, *shape, device=device, requires_grad=True), exclude)
    per_image = max(two - one, 1) + 2 * largest + 16 * math.prod(shape) * 4
    return MemoryEstimate(per_image=per_image, fixed=max(0, one - (two - one)), size=size)


def proc_bytes(field: str, path: str | Path = "/proc/self/status") -> int | None:
    """A ``kB`` field of a Linux /proc file in bytes (``VmRSS``, ``VmHWM``; ``MemAvailable`` of
    /proc/meminfo), or None where there is no such file or field."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def default_memory_budget(device: torch.device) -> int:
    """Half the free memory of a GPU; a quarter of the available RAM of the machine."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free // 2
    available = proc_bytes("MemAvailable", "/proc/meminfo")
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 4 * 2**30
    return available // 4


def auto_batch_size(count: int, estimate: MemoryEstimate, budget: int, device: torch.device,
                    precision: str = "fp32") -> int:
    """Images per batch for ``count`` images: as many as fit in ``budget``, up to :data:`BATCH_LIMITS`.

    Raises:
        RuntimeSettingError: not even one image fits.
    """
    fit = estimate.fits(budget)
    if fit < 1:
        raise RuntimeSettingError(
            f"A memory budget of {format_bytes(budget)} is too small: one image at {format_size(estimate.size)} px "
            f"needs about {format_bytes(estimate.total(1))}; raise --max-memory")
    limit = BATCH_LIMITS.get((torch.device(device).type, "bf16" if precision == "bf16" else "fp32"), 1)
    return max(1, min(count, fit, limit))


def plan_batch_size(model: LoadedModel, layers: Sequence[LayerRef], size: int | tuple[int, int], count: int, *,
                    batchwise: bool = False, runtime: Runtime | None = None) -> int:
    """Images per batch for optimizing ``count`` images of ``size`` px that read ``layers``.

    As many as the runtime's memory budget holds (:func:`estimate_memory`, :func:`auto_batch_size`);
    with ``batchwise`` (an objective that compares the images of a batch, such as diversity) all
    ``count`` of them, which must then fit.

    Raises:
        RuntimeSettingError: not even one image fits the budget.
        InvalidRecipeError: a batchwise job does not fit in one batch.
    """
    runtime = runtime or DEFAULT_RUNTIME
    estimate = estimate_memory(model, layers, size, runtime)
    budget = runtime.memory_budget(model.device)
    if batchwise:
        auto_batch_size(1, estimate, budget, model.device, runtime.precision)  # one image must fit
        if estimate.fits(budget) < count:
            raise InvalidRecipeError(
                f"a batchwise objective (diversity) needs all {count} images in one batch, about "
                f"{estimate.total(count) / 2**20:.0f} MiB at {format_size(size)} px; the memory budget holds "
                f"{estimate.fits(budget)}: raise --max-memory or use fewer copies")
        return count
    return auto_batch_size(count, estimate, budget, model.device, runtime.precision)


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


@checked
def parse_memory(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"1.5GiB"``, ``"2000000000"`` → bytes (K, M, G, T are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise RuntimeSettingError(f"Bad memory size {text!r}: use a number with an optional unit K, M, G or T "
                                  "(powers of 1024), e.g. 512M or 4G")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise RuntimeSettingError(f"Memory size must be positive (got {text!r})")
    return value


def format_size(size: int | tuple[int, int]) -> str:
    """``408`` or ``(64, 256)`` as ``408`` or ``64x256`` (height x width), for messages."""
    if isinstance(size, int):
        return str(size)
    return str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"


def format_bytes(count: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= factor:
            return f"{count / factor:.1f} {unit}"
    return f"{count} B"


# --------------------------------------------------------------------------------------------- cpu
@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str] | None]:
    """The CPU's model name and flags from /proc/cpuinfo (flags None where it cannot be read)."""
    model, flags = platform.processor() or platform.machine(), None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = frozenset(value.split())
                break
    return model, flags


def cpu_bf16_flags() -> set[str] | None:
    """The CPU's bfloat16 instructions (``amx_bf16``, ``avx512_bf16``; empty: none), or None when the CPU's
    flags cannot be read (not Linux)."""
    flags = _cpuinfo()[1]
    return None if flags is None else set(flags & {"amx_bf16", "avx512_bf16"})


def cpu_description() -> str:
    """The CPU model and its bfloat16 support, for metadata and benchmark results: e.g. ``AMD EPYC (bf16:
    avx512_bf16)`` or ``Intel(R) Xeon(R) Processor (bf16: amx_bf16, avx512_bf16)``, ``(bf16: none)`` where the
    CPU has neither (bf16 then runs 12-18x slower than fp32), ``(bf16: unknown)`` where the flags cannot be read."""
    flags = cpu_bf16_flags()
    support = "unknown" if flags is None else ", ".join(sorted(flags)) or "none"
    return f"{_cpuinfo()[0]} (bf16: {support})"


# ----------------------------------------------------------------------------------------- threads
def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use: its affinity mask, limited by a cgroup v2 CPU quota when there is one."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = cgroup.read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    return max(1, count)


def configure_threads() -> int:
    """Use one intra-op thread per usable CPU, unless OMP_NUM_THREADS/MKL_NUM_THREADS say otherwise.

    torch starts with one thread per *physical* core of the host, which in a container with a CPU
    quota oversubscribes the quota, and on some VMs leaves a core idle. Returns the thread count.
    """
    if "OMP_NUM_THREADS" in os.environ or "MKL_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    count = usable_cpus()
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


_GLIBC_OPTIONS = {-3: 1 << 30, -1: 1 << 30, -2: 64 << 20}  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_TOP_PAD


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's allocator keep freed blocks for the next step instead of returning them to the system.

    A render step frees and allocates the same large activations every time; glibc serves blocks over its
    mmap threshold (at most 32 MiB) with fresh ``mmap`` calls, whose pages the kernel zeroes on first touch, and
    returns them on free. Raising the threshold (and the trim threshold) to 1 GiB keeps them in the heap: the
    Lite0 step at 408 px 1.2x faster, the same at 224 px (benchmarks/step_rate.py). The cost: up to 1 GiB of
    freed memory stays with the process. The command line turns it on; ``True`` where applied (glibc only).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(option, value) == 1 for option, value in _GLIBC_OPTIONS.items())


# ---------------------------------------------------------------------------------------- prefetch
T = TypeVar("T")
U = TypeVar("U")


def prefetch(items: Iterable[T], load: Callable[[T], U], ahead: int = 2) -> Iterator[U]:
    """``load(item)`` for each item, in order, computed by a background thread up to ``ahead`` items early.

    Used to decode images while the network works on the previous ones. An exception raised by ``load``
    is raised here when its item is reached; closing the iterator early cancels what is queued.
    """
    iterator = iter(items)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="filterscope-prefetch")
    pending: deque = deque()
    try:
        for item in iterator:
            pending.append(pool.submit(load, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
