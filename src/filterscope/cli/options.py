"""Options shared by several commands, declared once.

Single options are ``Annotated`` aliases. Groups of options that build one library object are
:class:`OptionBundle` s: decorating a command with ``@recipe_options`` adds the ``--recipe``,
``--size``, ``--steps``, ... options to its signature (as shot-scraper's reusable option decorators do
for click) and hands the command one ready :class:`~filterscope.recipes.Recipe` in its ``recipe``
parameter; ``@runtime_options`` does the same for the speed options and a
:class:`~filterscope.runtime.Runtime`. Options default to ``None`` and are dropped before calling the
library, so defaults live in one place.

(No ``from __future__ import annotations`` here or in the command modules: Typer reads the real
annotation objects of the signatures these decorators build.)
"""

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from ..engine.recipes import Recipe, get_recipe
from ..errors import InvalidObjectiveError, InvalidOptionError
from ..runtime.core import Runtime
from ..zoo import LoadedModel, load_model, read_preprocessing

__all__ = ["ModelOption", "ModelArgument", "PreprocessingOption", "WeightsOption", "DeviceOption", "BatchOption", "SeedOption", "QuietOption", "OutOption",
           "FitOption", "KOption", "OptionBundle", "recipe_options", "recipe_overrides", "runtime_options", "analysis_runtime_options",
           "load", "parse_indices", "at_least"]

F = TypeVar("F", bound=Callable[..., Any])

ModelOption = Annotated[str, typer.Option(
    "--model", "-m", help="A model name (see `filterscope models`), FILE.py:FACTORY, package.module:FACTORY, a plugin "
                          "name (entry points 'filterscope.models') or an exported program FILE.pt2.")]
ModelArgument = Annotated[str, typer.Argument(help="A model name (see `filterscope models`) or FILE.py:FACTORY.",
                                              show_default=False)]
PreprocessingOption = Annotated[Optional[Path], typer.Option(
    "--preprocessing", help="TOML/JSON file with the model's input_size (side or [height, width]), mean and std "
                            "(one per input channel), resize_size, interpolation; replaces the model's own.")]
WeightsOption = Annotated[Optional[str], typer.Option(
    "--weights", "-w", help="'default' (the model's own), 'random' (untrained, seeded) or a state-dict FILE.")]
DeviceOption = Annotated[str, typer.Option(
    "--device", help="auto (cuda when available, else cpu), cpu, cuda or cuda:N.", rich_help_panel="Speed")]
BatchOption = Annotated[Optional[int], typer.Option(
    "--batch-size", help="Images per pass through the network (rendering default: as many as --max-memory holds, "
                         "up to what pays on the device; analyses: 4).", rich_help_panel="Speed")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the starting noise (and of random weights).")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).")]
FitOption = Annotated[str, typer.Option(
    "--fit", help="How the image meets the input: crop (the model's evaluation preprocessing), squash or pad.")]
KOption = Annotated[int, typer.Option("-k", "--top", help="How many top filters.")]


@dataclass(frozen=True)
class OptionBundle:
    """Options declared once, added to a command by decorating it, built into one value.

    Attributes:
        target: The command's parameter that receives the built value (it is not an option itself).
        parameters: The options, as keyword-only parameters with Typer annotations.
        build: Called with the options' values (by name); its result goes to ``target``.
    """

    target: str
    parameters: tuple[inspect.Parameter, ...]
    build: Callable[..., Any]

    def __call__(self, command: F) -> F:
        signature = inspect.signature(command)
        if self.target not in signature.parameters:
            raise TypeError(f"{command.__name__} has no parameter {self.target!r} for the bundle to fill")
        names = [p.name for p in self.parameters]
        kept = [p for p in signature.parameters.values() if p.name != self.target]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            kwargs[self.target] = self.build(**values)
            return command(*args, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*kept, *self.parameters])  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]


def _option(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def _recipe_panel(flag: str, kind: type, text: str) -> Any:
    return Annotated[Optional[kind], typer.Option(flag, help=f"Recipe: {text}", rich_help_panel="Recipe")]


_RECIPE_FIELDS = {  # parameter → (flag, type, help)
    "size": ("--size", int, "start size, px."),
    "scales": ("--scales", int, "number of scales."),
    "upscale": ("--upscale", float, "factor between scales."),
    "steps": ("--steps", int, "Adam steps per early scale."),
    "late_steps_factor": ("--late-steps-factor", float, "later scales run int(steps*factor) steps."),
    "lr": ("--lr", float, "Adam learning rate."),
    "weight_decay": ("--weight-decay", float, "Adam weight decay."),
    "blur": ("--blur", int, "box blur after each upscaling, px (odd, 0 = none)."),
    "lr_end": ("--lr-end", float, "learning rate at the end of each scale as a fraction of --lr (cosine decay; "
                                  "1 = constant)."),
    "transform_copies": ("--transform-copies", int, "transformed copies of each image per step, averaged (each "
                                                    "is a network pass)."),
    "relu_override_steps": ("--relu-override", int, "redirected ReLU gradient for the first N steps, so that "
                                                    "units that are 0 on the starting noise can rise."),
}


def _build_recipe(recipe_name: str, **values: Any) -> Recipe:
    return get_recipe(recipe_name).replace(**values)


recipe_options = OptionBundle(
    target="recipe",
    parameters=(
        _option("recipe_name", Annotated[str, typer.Option(
            "--recipe", help="A named recipe (paper, lucid, filterscope, cppn; see `filterscope recipes`) or a .json/.toml "
                             "file. The options below change single numbers of it.", rich_help_panel="Recipe")],
                "paper"),
        *(_option(name, _recipe_panel(flag, kind, text)) for name, (flag, kind, text) in _RECIPE_FIELDS.items()),
    ),
    build=_build_recipe,
)

recipe_overrides = OptionBundle(
    target="overrides",
    parameters=tuple(_option(name, _recipe_panel(flag, kind, text)) for name, (flag, kind, text) in _RECIPE_FIELDS.items()),
    build=lambda **values: {k: v for k, v in values.items() if v is not None},
)
"""The recipe's single-number options without --recipe, as a dict of the given ones (for commands that take
several recipes and change each the same way)."""

_PRECISION = _option("precision", Annotated[str, typer.Option(
    "--precision", help="auto: render in bf16 where a short timed probe on this machine finds it faster, else "
                        "fp32 (forward-only work runs fp32); fp32: exact; bf16: bfloat16 network, float32 loss "
                        "(faster on CPUs with AMX or AVX512-BF16 and on GPUs, many times slower on other CPUs; "
                        "slightly different images).", rich_help_panel="Speed")], "auto")
_LAYOUT = _option("channels_last", Annotated[Optional[bool], typer.Option(
    "--channels-last/--nchw", help="Memory format of the convolutions (default: channels-last, faster on "
                                   "CPUs and GPUs).", show_default=False, rich_help_panel="Speed")])
_MEMORY = _option("max_memory", Annotated[Optional[str], typer.Option(
    "--max-memory", help="Memory for the batch's working set, e.g. 2G or 512M (default: a quarter of the free "
                         "RAM, half the free GPU memory).", rich_help_panel="Speed")])

_FOLD = _option("fold", Annotated[bool, typer.Option(
    "--fold/--no-fold", help="Render with the batch norms folded into the convolutions before them (on a copy of "
                             "the network: the same function, 1.6x faster on EfficientNet-Lite0, images equal to "
                             "float rounding); --no-fold runs the network as it is.", rich_help_panel="Speed")], True)

runtime_options = OptionBundle(target="runtime", parameters=(_MEMORY, _PRECISION, _LAYOUT, _FOLD), build=Runtime)
"""--max-memory, --precision, --channels-last/--nchw, --fold/--no-fold: for commands that render."""

analysis_runtime_options = OptionBundle(target="runtime", parameters=(_PRECISION, _LAYOUT), build=Runtime)
"""--precision, --channels-last/--nchw: for commands that only run forward passes."""


def at_least(value: Optional[int], minimum: int, option: str) -> None:
    """A one-line error unless ``value`` (when given) is at least ``minimum``."""
    if value is not None and value < minimum:
        raise InvalidOptionError(f"{option} must be at least {minimum} (got {value})")


def load(model: str, weights: Optional[str], seed: int, device: str, quiet: bool,
         preprocessing: Optional[Path] = None) -> LoadedModel:
    """``load_model`` as the commands call it (download progress on stderr unless quiet)."""
    return load_model(model, weights, seed=seed, device=device, progress=not quiet,
                      preprocessing=None if preprocessing is None else read_preprocessing(preprocessing))


MAX_INDICES = 65536
"""Most indices one option may name (no layer has more channels; a typo like 0-2000000000 stops here)."""


def check_list(text: str, option: str) -> None:
    """A comma-separated list with an empty element (``1,,2``, ``a,``) is an error naming the option."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 1 and "" in parts:
        raise InvalidOptionError(f"{option} {text!r} has an empty element (two commas, or one at an end): "
                                 "write e.g. 16,266,306 or 0-7")


def parse_indices(text: str, option: str) -> list[int]:
    """``"16,266,306"`` or ``"0-7,12"`` → a list of ints. An empty element (``1,,2``, ``1,2,``) is a typo:
    an error, not a guess."""
    indices: list[int] = []
    check_list(text, option)
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                low, high = (int(p) for p in part.split("-", 1))
                if high < low:
                    raise ValueError
                if high - low + 1 + len(indices) > MAX_INDICES:
                    raise OverflowError
                indices.extend(range(low, high + 1))
            elif part:
                indices.append(int(part))
        except OverflowError:
            raise InvalidObjectiveError(f"{option} names more than {MAX_INDICES} indices ({text!r})") from None
        except ValueError:
            raise InvalidObjectiveError(f"Bad {option} value {text!r}: expected integers and ranges separated "
                                        "by commas, e.g. 16,266,306 or 0-7") from None
    if not indices:
        raise InvalidObjectiveError(f"{option} names no index")
    return indices
