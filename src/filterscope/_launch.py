"""The console script's entry point: Ctrl-C while the program starts (torch takes a second or two to
import) ends it quietly with status 130 instead of a traceback; then the command line runs.

Only this module and the package's lazy ``__init__`` load before the handler is in place.
"""

import signal
import sys


def _quiet(_signum: int, _frame: object) -> None:
    sys.stderr.write("interrupted\n")
    raise SystemExit(130)


def main() -> None:
    """``filterscope`` and ``python -m filterscope``."""
    previous = signal.signal(signal.SIGINT, _quiet)
    from .cli import main as cli_main  # torch and everything else load here

    signal.signal(signal.SIGINT, previous)
    cli_main()
