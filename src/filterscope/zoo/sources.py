"""Models that are not in the registry: the researcher's own, named the way the command line names them.

A model *spec* is one of

* a registered name (``efficientnet_lite0``; see :mod:`.registry`);
* ``path/to/file.py:factory``: the file is imported and ``factory()`` called;
* ``package.module:factory``: the module is imported (it must be importable) and ``factory()`` called;
* the name of an entry point in the group ``filterscope.models`` (a plugin package registers
  ``name = "package.module:factory"`` in its metadata), called the same way;
* ``path/to/model.pt2``: a ``torch.export`` exported program, unflattened so that its submodules (the
  layers) keep their names and can be hooked.

A factory returns an ``nn.Module`` or a :class:`~.registry.LoadedModel` (which carries its own
preprocessing and name). Preprocessing otherwise comes from a file (:func:`read_preprocessing`: TOML or
JSON with ``input_size``, ``mean``, ``std``, ``resize_size``, ``interpolation``) or defaults to
ImageNet's 224 px RGB. TorchScript modules cannot be hooked, so a TorchScript file is refused with a
message saying what to give instead. The spec is recorded (``LoadedModel.info["source"]``) so that PNG
metadata can name the model again (``filterscope evaluate``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import tomllib
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..arguments import checked
from ..errors import FilterscopeError, InvalidOptionError, UnknownModelError
from .model import LoadedModel, resolve_device, wrap_model
from .preprocessing import Preprocessing
from .registry import MODELS, load_registered
from .weights import WeightsSource, load_state_dict_into, read_state_dict

__all__ = ["ENTRY_POINT_GROUP", "is_model_spec", "load_model", "load_from_spec", "reload_model", "read_preprocessing",
           "entry_point_models"]

ENTRY_POINT_GROUP = "filterscope.models"


def entry_point_models() -> dict[str, importlib.metadata.EntryPoint]:
    """The models plugins register in the ``filterscope.models`` entry-point group, by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def is_model_spec(text: str) -> bool:
    """Whether ``text`` names a model outside the registry (a factory, an entry point or a file)."""
    return ":" in text or text.endswith((".pt2", ".pt", ".pth", ".ts")) or text in entry_point_models()


def read_preprocessing(path: str | os.PathLike[str]) -> Preprocessing:
    """A :class:`Preprocessing` from a TOML or JSON file (``input_size`` as a side or ``[height, width]``,
    ``mean`` and ``std`` with one value per channel, optional ``resize_size`` and ``interpolation``).

    Raises:
        InvalidOptionError: a missing or unreadable file, unknown keys or bad values.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidOptionError(f"Preprocessing file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        values = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise InvalidOptionError(f"Cannot read preprocessing file {path}: {exc}") from None
    if not isinstance(values, dict):
        raise InvalidOptionError(f"Preprocessing file {path} must hold an object of fields")
    known = {"input_size", "resize_size", "mean", "std", "interpolation"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidOptionError(f"Unknown preprocessing field(s) {unknown} in {path}; fields are {sorted(known)}")
    if "input_size" not in values or "mean" not in values or "std" not in values:
        raise InvalidOptionError(f"Preprocessing file {path} needs input_size, mean and std")
    size = values["input_size"]
    if isinstance(size, list):
        size = tuple(size)
    if isinstance(values.get("resize_size"), list):
        values = {**values, "resize_size": tuple(values["resize_size"])}
    side = min(size) if isinstance(size, tuple) and size else size
    values = {"resize_size": side if isinstance(side, int) else 0, **values, "input_size": size}
    try:
        return Preprocessing(**values)
    except TypeError as exc:
        raise InvalidOptionError(f"Bad preprocessing in {path}: {exc}") from None


def _import_file(path: Path) -> Any:
    name = "filterscope_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UnknownModelError(f"Cannot import {path} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except FilterscopeError:
        raise
    except Exception as exc:
        del sys.modules[name]
        raise UnknownModelError(f"Importing {path} failed: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    return module


def _factory(spec: str) -> tuple[Any, str]:
    """The callable a ``file.py:factory``, ``package.module:factory`` or entry-point spec names, and a
    default model name."""
    entry_points = entry_point_models()
    if spec in entry_points:
        try:
            return entry_points[spec].load(), spec
        except Exception as exc:
            raise UnknownModelError(f"Loading the plugin model {spec!r} ({entry_points[spec].value}) failed: "
                                    f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
    where, _, attribute = spec.rpartition(":")
    if not where or not attribute.isidentifier():
        raise UnknownModelError(f"Bad model {spec!r}: use a registered name (filterscope models), FILE.py:FACTORY, "
                                "package.module:FACTORY, a plugin name or a .pt2 exported program")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise UnknownModelError(f"Model file not found: {path} (in {spec!r})")
        module = _import_file(path)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise UnknownModelError(f"Cannot import module {where!r} for model {spec!r}: {exc}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise UnknownModelError(f"{where} has no callable {attribute!r} (it has: {', '.join(public[:12]) or 'none'})")
    return factory, attribute


def _exported(path: Path) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's own internal deprecations
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # torch.export.load raises several types for a bad archive
            raise UnknownModelError(f"Cannot load exported program {path}: {type(exc).__name__}: {exc}"
                                    .splitlines()[0]) from exc
        return torch.export.unflatten(program)


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/code/") or "/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_from_spec(spec: str, *, weights: str | os.PathLike[str] | None = None,
                   preprocessing: Preprocessing | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model that is not in the registry (see the module docstring for the forms of ``spec``).

    Args:
        spec: ``FILE.py:FACTORY``, ``package.module:FACTORY``, a plugin name, or a ``.pt2`` file.
        weights: A state-dict file loaded into the module (strictly), or None / ``default`` for the
            factory's own.
        preprocessing: Overrides the factory's (or the ImageNet default).
        device: Where the model lives.

    Raises:
        UnknownModelError: the spec names nothing that can be loaded, or a TorchScript file.
        WeightsError: the weights file does not fit.
    """
    path = Path(spec)
    if spec.endswith((".pt", ".pth", ".ts", ".pt2")) and not path.is_file():
        raise UnknownModelError(f"Model file not found: {path}")
    if spec.endswith(".pt2"):
        loaded: Any = _exported(path)
        name = path.stem
    elif path.suffix in (".pt", ".pth", ".ts"):
        if _is_torchscript(path):
            raise UnknownModelError(f"{path} is a TorchScript module: its layers cannot be hooked. Export the model "
                                    "with torch.export.save (a .pt2 file) or give a FILE.py:FACTORY that builds it")
        raise UnknownModelError(f"{path} is not a model filterscope can load by itself (a state dict needs its "
                                "architecture): give FILE.py:FACTORY, and the file with --weights")
    else:
        factory, name = _factory(spec)
        try:
            loaded = factory()
        except FilterscopeError:
            raise
        except Exception as exc:
            raise UnknownModelError(f"Model factory {spec!r} failed: {type(exc).__name__}: {exc}".splitlines()[0]) \
                from exc
    if isinstance(loaded, LoadedModel):
        model = loaded if preprocessing is None else LoadedModel(loaded.name, loaded.module, preprocessing,
                                                                 loaded.weights, loaded.categories, loaded.info)
    elif isinstance(loaded, nn.Module):
        if isinstance(loaded, torch.jit.ScriptModule):
            raise UnknownModelError(f"{spec!r} gives a TorchScript module: its layers cannot be hooked; return the "
                                    "nn.Module itself (or export with torch.export)")
        model = wrap_model(loaded, name=name, preprocessing=preprocessing, weights=WeightsSource.module(f"from {spec}"))
    else:
        raise UnknownModelError(f"Model factory {spec!r} returned {type(loaded).__name__}, not an nn.Module or a "
                                "LoadedModel")
    if weights is not None and str(weights) not in ("default", "random"):
        source = WeightsSource.file(weights)
        load_state_dict_into(model.module, read_state_dict(weights), model.name, str(source))
        model = LoadedModel(model.name, model.module, model.preprocessing, source, model.categories, model.info)
    elif weights is not None and str(weights) == "random":
        raise InvalidOptionError(f"--weights random applies to registered models; {spec!r} builds its own weights")
    model.info["source"] = _absolute(spec)  # recorded in PNGs: loadable again from any folder
    model.module.to(resolve_device(device))
    return model


def _absolute(spec: str) -> str:
    """``spec`` with a file part made absolute (``/home/me/net.py:factory``); other specs as they are."""
    where, sep, attribute = spec.rpartition(":")
    if sep and where.endswith(".py"):
        return f"{Path(where).resolve()}:{attribute}"
    if spec.endswith(".pt2"):
        return str(Path(spec).resolve())
    return spec


@checked
def load_model(name: str, weights: str | os.PathLike[str] | None = None, *, seed: int = 0,
               device: str | torch.device = "cpu", progress: bool = False,
               preprocessing: Preprocessing | None = None, calibrate: bool = True) -> LoadedModel:
    """Load a model by registered name or by any spec of :func:`load_from_spec`.

    Args:
        name: A name from :func:`~.registry.list_models`, ``FILE.py:FACTORY``, ``package.module:FACTORY``, a
            plugin name, or a ``.pt2`` exported program.
        weights: ``None``/``"default"`` (the model's own), ``"random"`` (registered models: untrained,
            seeded by ``seed``, batch-norm statistics re-estimated on the reference photos unless not
            ``calibrate``: :mod:`~filterscope.zoo.calibration`) or a state-dict file.
        seed: Seed of a random initialization.
        device: "cpu", "cuda", "cuda:N" or "auto".
        progress: Show a download progress bar on stderr (registered models with URL weights).
        preprocessing: Replaces the model's own preprocessing.

    Raises:
        UnknownModelError: nothing of that name; the message names the closest registered models.
        WeightsError: weights that cannot be found, read or fitted.
    """
    if name in MODELS or not is_model_spec(name):
        model = load_registered(name, weights, seed=seed, device=device, progress=progress, calibrate=calibrate)
        if preprocessing is not None:
            model = LoadedModel(model.name, model.module, preprocessing, model.weights, model.categories, model.info)
        return model
    return load_from_spec(name, weights=weights, preprocessing=preprocessing, device=device)


@checked
def reload_model(model: str, weights: WeightsSource, *, preprocessing: Preprocessing | None = None,
                 device: str | torch.device = "cpu", progress: bool = False) -> LoadedModel:
    """The model that made an image, from what was recorded with it: ``model`` (a registered name, or the
    source spec a model outside the registry was loaded from: PNG ``model_source``, the atlas's ``source``)
    with ``weights`` (random with its seed, the same file, or the model's own).

    Used by ``filterscope evaluate`` (from a PNG's metadata) and ``filterscope serve --render`` (from the
    atlas's model record); the caller checks the fingerprint where one was recorded.

    Raises:
        UnknownModelError, WeightsError: the model or the weights file is no longer there.
    """
    return load_model(model, weights.option, seed=weights.seed or 0, device=device, progress=progress,
                      preprocessing=preprocessing, calibrate=weights.calibrated)
