"""The Typer application, its global options, and the error guard every command wears.

Errors caused by input (a :class:`~filterscope.errors.FilterscopeError`) print one line on stderr
and exit with status 1; ``filterscope --debug ...`` shows the traceback instead. Ctrl-C exits 130.
"""

import contextlib
import functools
import signal
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

import typer

from .._version import __version__
from ..errors import FilterscopeError
from ..runtime.core import configure_threads, keep_freed_memory

__all__ = ["app", "guarded", "main", "Terminated", "deferred_signals"]

app = typer.Typer(
    name="filterscope",
    help="See what the filters of a convolutional network have learned (activation maximization).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"filterscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback when a command fails.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    _state["debug"] = debug
    configure_threads()
    keep_freed_memory()


def guarded(command: F) -> F:
    """One line on stderr and exit 1 for a FilterscopeError; exit 130 on Ctrl-C."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FilterscopeError as exc:
            if _state["debug"]:
                raise
            # One line whatever the message holds (a path or a name typed with a newline in it).
            typer.echo(f"error: {str(exc).replace(chr(13), ' ').replace(chr(10), ' ')}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            if _state["debug"]:
                raise
            terminated = isinstance(exc, Terminated)
            typer.echo(f"{'terminated' if terminated else 'interrupted'} (finished files are kept)", err=True)
            raise typer.Exit(143 if terminated else 130) from None

    return wrapper  # type: ignore[return-value]


class Terminated(KeyboardInterrupt):
    """SIGTERM (how batch systems stop a job), raised where the program is, like Ctrl-C: the work in
    progress stops, finished files stay, exit status 143."""


_received: list[int] = []
"""Signals that reached the program's handlers. An exception raised by a handler can land where Python
only reports it ("Exception ignored in ...": a finalizer, a weak-reference callback) and be lost; the work
loop checks this list at every step (:func:`check_signals`), so a Ctrl-C or SIGTERM is never lost."""


def _terminate(signum: int, _frame: object) -> None:
    _received.append(signum)
    raise Terminated


def _interrupt(signum: int, _frame: object) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def check_signals() -> None:
    """Raise again a Ctrl-C or SIGTERM that arrived but was lost (see :data:`_received`)."""
    if _received:
        raise Terminated if _received[0] == signal.SIGTERM else KeyboardInterrupt


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while the block runs (saving a finished batch), then act on them: a batch is
    saved whole or not at all. Outside the main thread (where handlers cannot be set) nothing is held."""
    received: list[int] = []

    def hold(signum: int, _frame: object) -> None:
        received.append(signum)

    try:
        previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise Terminated if received[0] == signal.SIGTERM else KeyboardInterrupt


def main() -> None:
    """Console-script entry point: SIGTERM is handled like Ctrl-C (finished files kept, exit 143)."""
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _interrupt)
    app()
