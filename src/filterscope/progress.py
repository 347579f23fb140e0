"""Progress bars for the library's callbacks, in a notebook as in a terminal.

The library never prints: its long functions report to a callback (``callback=`` of the renders, one
:class:`~filterscope.results.StepInfo` per Adam step; ``progress=`` of the analyses and trust
scores, ``(done, total)``). :class:`ProgressBar` is such a callback drawn by ``tqdm.auto``: a widget in Jupyter (with
ipywidgets), text on stderr elsewhere.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

from .engine.results import StepInfo

__all__ = ["ProgressBar"]


class ProgressBar:
    """A ``tqdm.auto`` bar to pass as ``callback=`` (renders) or ``progress=`` (analyses, trust scores)::

        result = fs.render(model, objectives, callback=fs.ProgressBar("render"))
        ranking = fs.rank_filters(model, images, "_blocks.15", progress=fs.ProgressBar("ranking"))

    Use it as a context manager (or call :meth:`close`) to close the bar when the work ends.
    """

    def __init__(self, label: str = "", *, leave: bool = True, disable: bool = False, **options: Any) -> None:
        self.bar = tqdm(desc=label, leave=leave, disable=disable, file=sys.stderr, dynamic_ncols=True, **options)

    def __call__(self, *report: Any) -> None:
        if len(report) == 1 and isinstance(report[0], StepInfo):
            self.step(report[0])
        else:
            self.done(*report[:2])

    def step(self, info: StepInfo) -> None:
        """One Adam step of a render: the bar counts steps over all batches."""
        if self.bar.total != info.total_steps * info.chunks:  # known once the batch size is
            self.bar.total = info.total_steps * info.chunks
            self.bar.unit = "step"
        self.bar.update(1)
        self.bar.set_postfix_str(f"batch {info.chunk + 1}/{info.chunks} scale {info.scale + 1} ({info.width}px) "
                                 f"mean activation {float(info.values.mean()):.3g}", refresh=False)

    def done(self, done: int, total: int | None = None) -> None:
        """``done`` of ``total`` items (images, units) finished."""
        if total is not None:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
