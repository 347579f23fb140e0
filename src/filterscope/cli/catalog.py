"""Commands that list what filterscope knows: ``models``, ``layers``, ``recipes``."""

from typing import Annotated, Optional

import typer

from ..engine.recipes import RECIPES
from ..errors import FilterscopeError
from ..layers import list_layers
from ..runtime.core import format_size
from ..zoo import PackageWeights, get_model_spec, list_models
from .app import app, guarded
from .options import PreprocessingOption, at_least, load


@app.command("models")
@guarded
def models_command(pattern: Annotated[str, typer.Argument(help="fnmatch pattern, e.g. '*resnet*'.")] = "*") -> None:
    """List the models filterscope knows by name, with where their weights come from."""
    names = list_models(pattern)
    if not names:
        raise FilterscopeError(f"No model matches {pattern!r}; run `filterscope models` for all")
    for name in names:
        spec = get_model_spec(name)
        if isinstance(spec.weights, PackageWeights):
            try:
                spec.weights.locate()
                where = f"package {spec.weights.distribution} (installed)"
            except FilterscopeError:
                where = f"package {spec.weights.distribution} (not installed)"
        else:
            cached = spec.weights.cache_path().is_file()
            where = f"{spec.weights.file_name} ({'cached' if cached else 'downloaded on first use'})"
        typer.echo(f"{name:<20} {format_size(spec.preprocessing.input_shape):>3} px  {where:<58} {spec.description}")


@app.command("recipes")
@guarded
def recipes_command() -> None:
    """List the named recipes (use one with --recipe NAME, or write a .json/.toml file with its fields)."""
    for name, recipe in RECIPES.items():
        color = " + decorrelated color" if recipe.decorrelate else ""
        decay = f" falling to {recipe.lr * recipe.lr_end:g} in each scale" if recipe.lr_end != 1 else ""
        copies = f" ({recipe.transform_copies} copies per step)" if recipe.transform_copies > 1 else ""
        typer.echo(f"{name:<12} {recipe.param}{color}; sizes {recipe.sizes()[0]}→{recipe.output_size} px in "
                   f"{recipe.scales} scale(s); {recipe.total_steps} Adam steps, lr {recipe.lr:g}{decay}; blur "
                   f"{recipe.blur}; transforms: {recipe.transforms.describe()}{copies}")


@app.command("layers")
@guarded
def layers_command(
    model: Annotated[str, typer.Argument(help="Model name (see `filterscope models`), FILE.py:FACTORY, "
                                              "package.module:FACTORY, a plugin name or FILE.pt2.")],
    size: Annotated[Optional[int], typer.Option("--size", help="Input size for the shapes (default: the model's).")] = None,
    contains: Annotated[Optional[str], typer.Option("--grep", help="Only layers whose name contains this.")] = None,
    preprocessing: PreprocessingOption = None,
) -> None:
    """Print every hookable layer of MODEL with its output shape (channels, height, width).

    Weights do not change shapes, so this never loads or downloads them.
    """
    at_least(size, 1, "--size")
    registered = model in list_models()
    loaded = load(model, "random" if registered else None, 0, "cpu", True, preprocessing)
    height, width = (size, size) if size else loaded.preprocessing.input_shape
    typer.echo(f"# {loaded.name}: layers and output shapes at {height}x{width} px input "
               f"({loaded.preprocessing.channels} channel(s))")
    typer.echo(f"{'layer':<40} {'type':<20} {'output shape':<18} calls")
    repeated = False
    for info in list_layers(loaded, (height, width)):
        if contains and contains not in info.name:
            continue
        calls = "" if info.calls == 1 else f"{info.calls} (last captured; NAME:0 for the first)"
        repeated = repeated or info.calls > 1
        typer.echo(f"{info.name or 'output':<40} {info.type:<20} {tuple(info.shape)!s:<18} {calls}")
    if repeated:
        typer.echo("# A module that runs several times is captured at its last call; torchvision's feature "
                   "extraction (get_graph_node_names) names its calls NAME, NAME_1, ...: NAME_K is accepted "
                   "for NAME:K here, but a plain NAME is the last call here and the first there.")
    typer.echo("# Functional operations (torchvision's add, flatten, ...) are not modules: use NEXT@in, the "
               "input of the module that runs after one.")
