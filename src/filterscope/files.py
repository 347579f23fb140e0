"""Files: atomic writes, content hashes, checks that an output can be written, and output-folder locks.

Writing is atomic (a temporary file ``.NAME.PID.XXXXXXXX.part`` in the same folder, renamed into place), so an
interrupted run never leaves a half-written file under its final name; :func:`remove_stale_parts` deletes the
temporary files of processes that no longer run. Image formats are :mod:`filterscope.images`' business.

A full disk (``ENOSPC``, or a quota's ``EDQUOT``) is an :class:`~filterscope.errors.OutputError` naming the folder,
what is free and what the write needed (:func:`no_space`); the temporary file is removed, so a run stopped by a
full disk leaves only whole files, and the same command finishes once space is freed. Files that are memory
mapped (the atlas's matrices) are reserved with ``posix_fallocate`` first (:func:`open_matrix`): a full disk is then
an error at once, not a ``SIGBUS`` when a page is first written.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ImageError, OutputError

__all__ = ["cache_dir", "atomic_write", "atomic_write_text", "write_bytes", "file_sha256", "regular_file",
           "check_output", "remove_stale_parts", "OutputLock", "no_space", "is_no_space", "open_matrix"]

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def cache_dir() -> Path:
    """Where filterscope caches what it measured (precision probes, random networks' batch-norm statistics):
    ``$FILTERSCOPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/filterscope``, else ``~/.cache/filterscope``."""
    if os.environ.get("FILTERSCOPE_CACHE_DIR"):
        return Path(os.environ["FILTERSCOPE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "filterscope"


def atomic_write(path: Path, write: Callable[[Path], object], size: int | None = None) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place (atomic). ``size``: the
    bytes it writes, when known, for the message of a full disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain file name (not mkstemp, whose files are private): the result gets the usual permissions.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_no_space(exc):
            raise no_space(path.parent, size) from None
        raise


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in _NO_SPACE


def no_space(folder: Path, needed: int | None = None) -> OutputError:
    """The one-line error of a full disk while writing into ``folder``."""
    try:
        free = f"{_size(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = "free space unknown"
    need = f"; this write needs {_size(needed)}" if needed else ""
    return OutputError(f"No space left on the device of {folder} ({free}{need}): free some space and run the same "
                       "command again (what is finished is kept)")


def _size(count: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= factor:
            return f"{count / factor:.1f} {unit}"
    return f"{count} bytes"


def open_matrix(path: Path, mode: str, dtype: Any, shape: tuple[int, ...]) -> Any:
    """``numpy.lib.format.open_memmap(path, mode, dtype, shape)``; a new one (``w+``) has its blocks allocated at
    once (``posix_fallocate``), so that writing through the map cannot fail with ``SIGBUS`` on a full disk. A full
    disk is a :func:`no_space` error, here and not later, and the file is removed."""
    import numpy as np

    try:
        array = np.lib.format.open_memmap(path, mode=mode, dtype=dtype, shape=shape)
        if mode == "w+":
            _reserve(path)
    except OSError as exc:
        if not is_no_space(exc):
            raise
        path.unlink(missing_ok=True)
        raise no_space(path.parent, int(np.prod(shape)) * np.dtype(dtype).itemsize) from None
    return array


def _reserve(path: Path) -> None:
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, path.stat().st_size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem without it: nothing reserved
                raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically. Returns the path."""
    path = Path(path)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path

def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically. Returns the path."""
    path = Path(path)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), len(data))
    return path

def regular_file(path: str | os.PathLike[str], what: str = "Image") -> Path:
    """``path`` if it is a regular file; a one-line :class:`ImageError` if it is missing, a folder, or
    something that would block or never end when read (a FIFO, a device, a socket)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise ImageError(f"Cannot read {what.lower()} {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise ImageError(f"Expected a file, got a folder: {path}")
    if not stat.S_ISREG(mode):
        raise ImageError(f"Not a regular file (a pipe, device or socket): {path}")
    return path

def check_output(path: str | os.PathLike[str], *, folder: bool) -> Path:
    """Check, before any work, that ``path`` can be written later: a folder (``folder=True``) or a file.

    Nothing is created. The nearest existing ancestor must be a folder in which a file can be made (tried
    with a temporary file, which also catches read-only filesystems and pseudo-filesystems such as /proc).

    Raises:
        OutputError: an empty path, a file where a folder is needed (or the reverse), a component too long
            for the filesystem, or a place that cannot be written.
    """
    text = os.fspath(path)
    if not text.strip():
        raise OutputError("An output path is empty")
    path = Path(text)
    what = "Output folder" if folder else "Output file"
    long = [part for part in path.parts if len(os.fsencode(part)) > 255]
    if long:
        raise OutputError(f"{what} {str(path)[:60]}...: the name {long[0][:30]}... is longer than filesystems allow "
                          "(255 bytes)")
    if path.exists():
        if folder and not path.is_dir():
            raise OutputError(f"{what} {path} exists and is not a folder")
        if not folder and path.is_dir():
            raise OutputError(f"{what} {path} is a folder; give a file name")
    ancestor = path if folder and path.is_dir() else path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{what} {path} cannot be created: {ancestor} is a file")
    try:
        limit = os.pathconf(ancestor, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    long = [part for part in path.parts if len(os.fsencode(part)) > limit]
    if long:
        raise OutputError(f"{what} {path}: the name {long[0][:40]}... is longer than this filesystem allows "
                          f"({limit} bytes)")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        raise OutputError(f"{what} {path} cannot be written: {exc.strerror or exc} in {ancestor}") from None
    return path

_PART = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.part$")

def remove_stale_parts(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of :func:`atomic_write` that a killed process left in ``folder`` (their
    process no longer runs); a live process's are left alone. Returns what was removed."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _PART.match(path.name)
        if match is None or _alive(int(match.group("pid"))):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed

def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True

class OutputLock:
    """An exclusive lock on an output folder for the duration of a run (``fcntl.flock`` on a hidden lock
    file), so that two runs never write into one folder at once.

    Args:
        folder: The folder (created if missing).
        name: The lock file's name.
        on_wait: ``None``: fail at once when another process holds the lock. Otherwise called with the
            holder's description, then the lock is waited for (the lock file is then never removed, so
            that every waiter locks the same file).

    Raises:
        OutputError: another process holds the lock and ``on_wait`` is ``None`` (its pid is named).
    """

    NAME = ".filterscope.lock"

    def __init__(self, folder: str | os.PathLike[str], *, name: str = NAME,
                 on_wait: Callable[[str], object] | None = None) -> None:
        self.path = Path(folder) / name
        self.on_wait = on_wait
        self._handle: Any = None

    def __enter__(self) -> OutputLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # held open (and locked) until __exit__
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            if self.on_wait is None:
                handle.close()
                raise OutputError(f"{self.path.parent} is being written by another filterscope run ({holder}); "
                                  "wait for it to finish or choose another --out") from None
            self.on_wait(holder)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
            except BaseException:
                handle.close()
                raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            if self.on_wait is None:
                self.path.unlink(missing_ok=True)
            else:
                self._handle.truncate(0)
            self._handle.close()
            self._handle = None
