"""The console script's entry point: Ctrl-C while the program starts (torch takes a second or two to
import) ends it quietly with status 130 instead of a traceback; then the command line runs.

Only this module and the package's lazy ``__init__`` load before the handler is in place.
"""

import os
import signal
import sys


def _quiet(_signum: int, _frame: object) -> None:
    # Exit at once rather than raise: the signal can land while torch's C++ extension is running Python
    # code (pybind11), where an exception escaping the handler aborts the process (SIGABRT) instead of
    # unwinding. Nothing has been written yet, so there is nothing to clean up.
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def main() -> None:
    """``filterscope`` and ``python -m filterscope``."""
    previous = signal.signal(signal.SIGINT, _quiet)
    from .cli import main as cli_main  # torch and everything else load here

    signal.signal(signal.SIGINT, previous)
    cli_main()
