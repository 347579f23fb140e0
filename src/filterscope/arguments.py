"""The public API checks its arguments against their annotations: a wrong-typed argument is an
:class:`~filterscope.errors.ArgumentTypeError` naming it and what it may be, raised at the call, before
any work (``fs.rank_filters(model, images, "_blocks.15", k="10")`` →
``fs.rank_filters: k must be int, not str``), never an ``AttributeError`` from deep inside.

Every function in ``fs.__all__`` is wrapped with :func:`checked` where it is defined (so the library's own
calls are checked too: about 5 µs a call, and 4 µs per item of a sequence, e.g. 4 ms for 1,000 images to
rank). The rules are the annotations read the way the functions already treat their arguments, which is
looser than PEP 484 on purpose:

- an ``int`` is anything with ``__index__`` (numpy integers, a one-element integer tensor), a ``float``
  any real number, a ``bool`` a bool or a numpy bool;
- a ``Sequence[int]`` or ``Sequence[float]`` may also be a numpy array or a tensor;
- a ``str`` is never a ``Sequence`` (a lone path where a list is expected would be a list of letters);
- items of sequences and mappings are checked; names the annotations cannot resolve, ``Any``, type
  variables and protocols accept anything.

Hand-written rather than typeguard or beartype: both check PEP 484 to the letter (``numpy.int64`` is not
an ``int``, ``"abc"`` is a ``Sequence[str]``) and neither writes the one-line error the CLI shows; the rules
above are about eighty lines.
"""

from __future__ import annotations

import ast
import collections.abc as abc
import functools
import importlib
import importlib.util
import inspect
import numbers
import os
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from .errors import ArgumentTypeError

P = ParamSpec("P")
R = TypeVar("R")

_SEQUENCES = (abc.Sequence, list, tuple, abc.Collection, abc.Iterable, set, frozenset, abc.Set)
_MAPPINGS = (abc.Mapping, dict)


def checked(function: Callable[P, R]) -> Callable[P, R]:
    """``function`` with its arguments checked against its annotations at every call."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        check_arguments(function, signature, args, kwargs)
        return function(*args, **kwargs)

    wrapper.__checked__ = True  # type: ignore[attr-defined]
    return wrapper


def check_arguments(function: Callable[..., Any], signature: inspect.Signature, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> None:
    """Raise :class:`ArgumentTypeError` for the first argument its annotation does not accept."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as error:  # a missing or unexpected argument: Python's own words, as our error
        raise ArgumentTypeError(f"fs.{function.__name__}: {error}") from None
    hints = resolved_hints(function)
    for name, value in bound.arguments.items():
        if name not in hints:
            continue
        kind = signature.parameters[name].kind
        values = (value if kind is inspect.Parameter.VAR_POSITIONAL
                  else value.values() if kind is inspect.Parameter.VAR_KEYWORD else (value,))
        for each in values:
            if not accepts(each, hints[name]):
                wanted = describe(hints[name])
                advice = f" (load it first: fs.load_model({each!r}))" if (
                    isinstance(each, str) and "fs.load_model" in wanted) else ""
                raise ArgumentTypeError(f"fs.{function.__name__}: {name} must be {wanted}, not {kind_of(each)}{advice}")


@functools.cache
def resolved_hints(function: Callable[..., Any]) -> dict[str, Any]:
    """The parameters' annotations evaluated in the function's module (with the names it imports only for type
    checking); a name that cannot be resolved is left out (not checked)."""
    hints, namespace = {}, _Fallback(function.__globals__)
    for name, annotation in getattr(function, "__annotations__", {}).items():
        if name == "return":
            continue
        try:
            hints[name] = (eval(annotation, function.__globals__, namespace)  # our own source's annotations
                           if isinstance(annotation, str) else annotation)
        except Exception:
            continue
    return hints


def unresolved(function: Callable[..., Any]) -> list[str]:
    """The annotated parameters of ``function`` that :func:`resolved_hints` could not resolve."""
    wrapped = inspect.unwrap(function)
    names = [n for n in getattr(wrapped, "__annotations__", {}) if n != "return"]
    return [n for n in names if n not in resolved_hints(wrapped)]


class _Fallback(dict[str, Any]):
    """A module's names, then those it imports only under ``if TYPE_CHECKING:`` (read from its source, as a
    type checker reads them: never through the package's face, which imports every module)."""

    def __missing__(self, key: str) -> Any:
        module_name, attribute = _type_checking_imports(str(self.get("__name__", ""))).get(key, (None, None))
        if module_name is None:
            raise KeyError(key)
        module = importlib.import_module(module_name)
        return module if attribute is None else getattr(module, attribute)


@functools.cache
def _type_checking_imports(module_name: str) -> dict[str, tuple[str, str | None]]:
    """``{name: (module, attribute or None)}`` for the imports under ``if TYPE_CHECKING:`` of a loaded module."""
    module = sys.modules.get(module_name)
    try:
        tree = ast.parse(inspect.getsource(module)) if module is not None else None
    except (OSError, TypeError, SyntaxError):
        tree = None
    found: dict[str, tuple[str, str | None]] = {}
    for node in tree.body if tree is not None else ():
        if not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)):
            continue
        for statement in node.body:
            if isinstance(statement, ast.ImportFrom):
                source = importlib.util.resolve_name("." * statement.level + (statement.module or ""),
                                                     getattr(module, "__package__", None) or module_name)
                found.update({a.asname or a.name: (source, a.name) for a in statement.names})
            elif isinstance(statement, ast.Import):
                found.update({a.asname or a.name.partition(".")[0]: (a.name if a.asname else
                                                                      a.name.partition(".")[0], None)
                              for a in statement.names})
    return found


def accepts(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits ``hint`` under the rules of this module."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, TypeVar):
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(accepts(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint in (int, bool, float, str):
        return _scalar(value, hint)
    if origin in _MAPPINGS:
        return isinstance(value, abc.Mapping) and (
            not args or all(accepts(k, args[0]) and accepts(v, args[1]) for k, v in value.items()))
    if origin in _SEQUENCES or hint in _SEQUENCES:
        return _sequence(value, origin or hint, args)
    if origin is abc.Callable or hint is abc.Callable:
        return callable(value)
    if origin is type:
        return isinstance(value, type) and (not args or not isinstance(args[0], type) or issubclass(value, args[0]))
    if isinstance(origin, type):
        return isinstance(value, origin)
    if isinstance(hint, type):
        return getattr(hint, "_is_protocol", False) or isinstance(value, hint)
    return True  # a construct these rules do not know: accept rather than refuse a valid call


def _scalar(value: Any, hint: type) -> bool:
    if hint is str:
        return isinstance(value, str)
    if hint is bool:
        return isinstance(value, bool) or (str(getattr(value, "dtype", "")) == "bool" and _array(value)
                                           and getattr(value, "ndim", 1) == 0)
    if hint is float and (isinstance(value, numbers.Real) or (_array(value) and getattr(value, "ndim", 1) == 0)):
        return True
    try:
        _ = value.__index__()
    except (AttributeError, TypeError, RuntimeError, ValueError):
        return False
    return True


def _sequence(value: Any, origin: Any, args: tuple[Any, ...]) -> bool:
    if isinstance(value, str | bytes):
        return False
    if _array(value):  # an array or a tensor is a sequence of numbers
        return not args or accepts(0, args[0]) or accepts(0.5, args[0])
    if not isinstance(value, abc.Sequence if origin in (abc.Sequence, list, tuple) else abc.Iterable):
        return False
    if not args or not isinstance(value, abc.Collection):
        return True
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        return len(value) == len(args) and all(accepts(v, a) for v, a in zip(value, args, strict=True))
    return all(accepts(v, args[0]) for v in value)


def _array(value: Any) -> bool:
    return type(value).__module__.split(".")[0] in ("numpy", "torch") and hasattr(value, "shape")


def kind_of(value: Any) -> str:
    """The type of ``value`` for an error message; a list or tuple with the types it holds: ``list of int``."""
    if isinstance(value, list | tuple | set | frozenset) and value:
        held = sorted({type(v).__name__ for v in value})
        return f"{type(value).__name__} of {' and '.join(held[:3])}"
    return type(value).__name__


def describe(hint: Any) -> str:
    """``hint`` in words for an error message: ``str or LayerRef``, ``a sequence of int``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is None or hint is type(None):
        return "None"
    if origin in (typing.Union, types.UnionType):
        words = [describe(a) for a in args]
        return ", ".join(words[:-1]) + " or " + words[-1]
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin in _MAPPINGS:
        return f"a mapping of {describe(args[0])} to {describe(args[1])}" if args else "a mapping"
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        return "a tuple (" + ", ".join(describe(a) for a in args) + ")"
    if origin in _SEQUENCES:
        item = describe(args[0]) if args else ""
        return f"a sequence of ({item})" if " or " in item else f"a sequence of {item}" if args else "a sequence"
    if origin is abc.Callable or hint is abc.Callable:
        return "a callable"
    if origin is os.PathLike or hint is os.PathLike:
        return "a path"
    return _class_name(origin if isinstance(origin, type) else hint)


def _class_name(cls: Any) -> str:
    if not isinstance(cls, type):
        return str(cls)
    names = {"LoadedModel": "a LoadedModel (from fs.load_model or fs.wrap_model)", "Module": "a torch.nn.Module",
             "Tensor": "a torch.Tensor", "Image": "a PIL image"}
    return names.get(cls.__name__, cls.__name__)
