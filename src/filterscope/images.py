"""Image files: reading photos, writing PNGs with metadata, atomic writes.

This module owns files, not tensors (:mod:`filterscope.tensors` converts them) nor render results
(:mod:`filterscope.results` names, describes and saves them). Writing is atomic (a temporary file in
the same folder, renamed into place), so an interrupted run never leaves a half-written file; PNGs
carry their provenance as text chunks.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import stat
import tempfile
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .errors import ImageError, OutputError

__all__ = ["save_png", "encode_png", "write_bytes", "file_sha256", "read_png_metadata", "load_image", "load_array",
           "save_array", "atomic_write", "atomic_write_text", "regular_file", "check_output", "remove_stale_parts",
           "OutputLock", "ARRAY_SUFFIXES"]

ARRAY_SUFFIXES = (".npy", ".tif", ".tiff")
"""Files read as arrays of any channel count: NumPy ``.npy`` and (multi-page) TIFF."""


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain file name (not mkstemp, whose files are private): the result gets the usual permissions.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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


def encode_png(image: Image.Image, metadata: Mapping[str, str] | None = None) -> bytes:
    """``image`` as PNG bytes with ``metadata`` as text chunks (what :func:`save_png` writes)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(key, str(value))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically. Returns the path."""
    path = Path(path)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return path


def save_png(image: Image.Image, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``image`` as PNG with ``metadata`` as text chunks, atomically. Returns the path."""
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(key, str(value))
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))
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


def read_png_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The text chunks of a PNG written by :func:`save_png`.

    Raises:
        ImageError: the file is missing, not a regular file, not an image, or its metadata cannot be read
            (truncated, or a text chunk that inflates past Pillow's safety limit).
    """
    path = regular_file(path)
    try:
        with Image.open(path) as image:
            return {str(k): str(v) for k, v in getattr(image, "text", {}).items()}
    except UnidentifiedImageError:
        raise ImageError(f"Not an image file (or an unsupported format): {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"Cannot read the metadata of {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}") \
            from None


def load_image(path: str | os.PathLike[str], *, min_side: int | None = None) -> Image.Image:
    """Read an image as RGB, with its EXIF orientation applied.

    Grayscale, palette, CMYK and RGBA images are converted to RGB (alpha over white). With
    ``min_side``, a large JPEG is decoded directly at a reduced scale whose shorter side is still at
    least ``min_side`` (Pillow's draft mode), so a 12000 x 8000 photo never needs its full-size pixels.
    ``image.info["original_size"]`` keeps the full (oriented) size, which region coordinates refer to.

    Raises:
        ImageError: the file is missing, not an image, too large, or truncated/corrupt.
    """
    path = regular_file(path)
    try:
        with warnings.catch_warnings():
            # Large photos are expected here; Pillow still refuses absurd sizes with DecompressionBombError.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as file:
                raw_w, raw_h = file.size
                if min_side and file.format == "JPEG" and min(raw_w, raw_h) > 2 * min_side:
                    factor = min_side / min(raw_w, raw_h)
                    file.draft("RGB", (math.ceil(raw_w * factor), math.ceil(raw_h * factor)))
                file.load()
                rotated = file.getexif().get(0x0112, 1) in (5, 6, 7, 8)
                image = ImageOps.exif_transpose(file)
                if image.mode.startswith("I"):  # 16/32-bit integers: scale to 8 bits instead of clipping at 255
                    values = np.asarray(image, dtype=np.float64)
                    top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) <= 65535 else values.max()
                    image = Image.fromarray((values / top * 255).round().clip(0, 255).astype(np.uint8), mode="L")
                if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                    rgba = image.convert("RGBA")
                    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(background, rgba).convert("RGB")
                else:
                    image = image.convert("RGB")
    except UnidentifiedImageError:
        raise ImageError(f"Not an image file (or an unsupported format): {path}") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"Image too large to read safely: {path} ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"Cannot read image {path}: it is truncated or corrupt ({exc})") from None
    image.info["original_size"] = (raw_h, raw_w) if rotated else (raw_w, raw_h)
    return image


def load_array(path: str | os.PathLike[str], channels: int | None = None) -> np.ndarray:
    """An image of any channel count as a ``(C,H,W)`` float32 array in [0, 1].

    ``.npy`` (``(C,H,W)``, ``(H,W,C)`` or ``(H,W)``) is read without pickles; ``.tif``/``.tiff`` with
    tifffile (one page per channel, or one page of ``(H,W,C)``). Integer data is scaled by its type's
    range (uint8 by 255, uint16 by 65535); float data is taken as it is and must lie in [0, 1].
    ``channels``, when given, picks the layout (``(H,W,C)`` vs ``(C,H,W)``) and is checked.

    Raises:
        ImageError: a missing, unreadable or malformed file, or values outside [0, 1].
    """
    path = regular_file(path, "Array")
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            import tifffile  # installed with scikit-image

            array = tifffile.imread(path)
    except (OSError, ValueError, EOFError) as exc:
        raise ImageError(f"Cannot read array {path}: {exc}") from None
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ImageError(f"Array {path} has shape {array.shape}; expected (channels, height, width)")
    if channels is not None and array.shape[0] != channels and array.shape[-1] == channels:
        array = np.moveaxis(array, -1, 0)
    if channels is not None and array.shape[0] != channels:
        raise ImageError(f"Array {path} has shape {array.shape}: the model takes {channels} channels")
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ImageError(f"Array {path} holds floats outside [0, 1] (or NaN): scale it to [0, 1] first")
    else:
        raise ImageError(f"Array {path} has dtype {array.dtype}; expected integers or floats")
    return np.ascontiguousarray(array)


def save_array(array: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write ``array`` as ``.npy`` atomically. Returns the path."""
    path = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)

    atomic_write(path, write)
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
