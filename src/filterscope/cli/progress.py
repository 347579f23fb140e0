"""The command line's progress bars: :class:`~filterscope.progress.ProgressBar` (tqdm.auto, on stderr), quiet when
asked, and checking for signals at every render step."""

from typing import Optional

from ..engine.results import StepInfo
from ..progress import ProgressBar
from .app import check_signals

__all__ = ["ImageProgress", "RenderProgress", "ProgressBars"]


class ImageProgress(ProgressBar):
    """A bar fed by the ``progress(done, total)`` callbacks of the analyses; a context manager."""

    def __init__(self, label: str, total: Optional[int], quiet: bool, unit: str = "image") -> None:
        super().__init__(label, total=total, unit=unit, disable=quiet, leave=False)


class ProgressBars:
    """One :class:`ImageProgress` per kind of work, made when a ``progress(what, done, total)`` callback first names
    it (counted in ``units[what]``, else images); a context manager that closes them all."""

    def __init__(self, quiet: bool, units: Optional[dict[str, str]] = None) -> None:
        self.quiet, self.units = quiet, units or {}
        self.bars: dict[str, ImageProgress] = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        if what not in self.bars:
            self.bars[what] = ImageProgress(what, total, self.quiet, unit=self.units.get(what, "image"))
        self.bars[what](done, total)

    def __enter__(self) -> "ProgressBars":
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in self.bars.values():
            bar.close()


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
