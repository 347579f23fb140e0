"""How the work runs on the hardware.

* :mod:`.core`: :class:`Runtime` (device, precision, memory format, threads), the truncated :class:`Forward`,
  memory estimates and batch sizes, CPU facts, prefetching;
* :mod:`.precision`: ``--precision auto``, decided by a timed probe;
* :mod:`.fusion`: batch norms folded into the convolutions before them while rendering;
* :mod:`.gradients`: the redirected ReLU gradient, so units that start at zero can be optimized.

``filterscope.runtime.Runtime`` and every name of :mod:`.core` import from here as they did when the runtime was
one module; ``filterscope.precision``, ``filterscope.fusion`` and ``filterscope.gradients`` still import, with a
``DeprecationWarning``, for one release.
"""

from .core import (
    ANALYSIS_BATCH,
    BATCH_LIMITS,
    PRECISIONS,
    Forward,
    MemoryEstimate,
    Runtime,
    auto_batch_size,
    configure_threads,
    cpu_bf16_flags,
    cpu_description,
    default_memory_budget,
    estimate_memory,
    format_bytes,
    format_size,
    keep_freed_memory,
    memory_format,
    parse_memory,
    plan_batch_size,
    prefetch,
    proc_bytes,
    usable_cpus,
)

__all__ = ["Runtime", "Forward", "memory_format", "MemoryEstimate", "PRECISIONS", "estimate_memory", "auto_batch_size",
           "default_memory_budget", "parse_memory", "format_bytes", "format_size", "usable_cpus", "configure_threads",
           "prefetch", "proc_bytes", "BATCH_LIMITS", "ANALYSIS_BATCH", "plan_batch_size", "cpu_description",
           "cpu_bf16_flags", "keep_freed_memory"]
