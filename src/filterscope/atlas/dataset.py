"""The images of an exemplar pass: a folder (recursive) or a text file listing image paths, with the
content hash of every file, so that an atlas knows exactly which images its exemplars come from."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..analysis.inputs import IMAGE_SUFFIXES
from ..arguments import checked
from ..errors import ImageError
from ..files import file_sha256, regular_file

__all__ = ["Dataset", "list_dataset"]


@dataclass(frozen=True)
class Dataset:
    """Images in a fixed order (their index is their identity in the atlas) with their SHA-256.

    Attributes:
        source: The folder or list file, as given (absolute).
        paths: Absolute paths, sorted (a folder) or in the list's order.
        hashes: SHA-256 of each file's content.
    """

    source: str
    paths: tuple[Path, ...]
    hashes: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the paths and contents: another file, order or content is another dataset."""
        digest = hashlib.sha256()
        for path, sha in zip(self.paths, self.hashes):
            digest.update(f"{path}\0{sha}\n".encode())
        return digest.hexdigest()

    def __len__(self) -> int:
        return len(self.paths)


@checked
def list_dataset(source: str | os.PathLike[str]) -> Dataset:
    """The images of ``source``: a folder (every file with an image suffix below it, recursively, sorted
    by path) or a text file with one image path per line (relative paths are relative to the file; blank
    lines and lines starting with ``#`` are skipped).

    Raises:
        ImageError: the source does not exist, names no images, or lists a file that is missing.
    """
    root = Path(source).expanduser()
    if not root.exists():
        raise ImageError(f"Dataset {root} does not exist (give a folder of images or a text file listing them)")
    if root.is_dir():
        paths = sorted(p.resolve() for p in root.rglob("*")
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith("."))
        if not paths:
            raise ImageError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in dataset folder {root} or below it")
    elif root.suffix.lower() in IMAGE_SUFFIXES:
        raise ImageError(f"Dataset {root} is an image: give the folder it is in, or a text file listing image paths")
    else:
        listing = regular_file(root, "Dataset list")
        try:
            lines = listing.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ImageError(f"Dataset list {root} cannot be read as text: {exc}") from None
        paths = []
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            path = Path(text).expanduser()
            path = (path if path.is_absolute() else listing.parent / path).resolve()
            if not path.is_file():
                raise ImageError(f"Dataset list {root}, line {number}: {path} is not a file")
            paths.append(path)
        if not paths:
            raise ImageError(f"Dataset list {root} names no images")
    hashes = []
    for path in paths:
        try:
            hashes.append(file_sha256(regular_file(path)))
        except ImageError:
            raise
        except OSError as exc:
            raise ImageError(f"Cannot read dataset image {path}: {exc.strerror or exc}") from None
    return Dataset(str(root.resolve()), tuple(paths), tuple(hashes))
