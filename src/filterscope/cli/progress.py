"""Progress bars on stderr (tqdm), fed by the library's callbacks."""

import sys
from typing import Optional

from tqdm.auto import tqdm

from ..progress import ProgressBar
from ..results import StepInfo
from .app import check_signals

__all__ = ["ImageProgress", "RenderProgress"]


class ImageProgress:
    """A bar fed by the ``progress(done, total)`` callbacks of the analyses; a context manager."""

    def __init__(self, label: str, total: Optional[int], quiet: bool, unit: str = "image") -> None:
        self.bar = tqdm(total=total, desc=label, unit=unit, disable=quiet, leave=False, file=sys.stderr,
                        dynamic_ncols=True)

    def __call__(self, done: int, total: int) -> None:
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> "ImageProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


class RenderProgress(ProgressBar):
    """A bar fed by render callbacks (one :class:`StepInfo` per Adam step), that also checks for signals."""

    def __init__(self, label: str, total: Optional[int], quiet: bool) -> None:
        super().__init__(label, total=total, unit="step", disable=quiet, leave=False)

    def __call__(self, info: StepInfo) -> None:
        check_signals()  # a signal whose exception was lost stops the work at the next step
        self.step(info)

    def write(self, line: str) -> None:
        """Print a line above the bar."""
        self.bar.write(line)
