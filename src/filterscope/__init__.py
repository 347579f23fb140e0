"""filterscope: see what the filters of a convolutional network have learned.

The public API::

    import filterscope as fs
    model = fs.load_model("efficientnet_lite0")            # or fs.wrap_model(any_module, ...)
    fs.list_layers(model)                                  # names and output shapes
    result = fs.visualize_filters(model, "_blocks.15", [16, 266], seed=0)
    result.to_pil()                                        # PIL images; result.metadata(i)

Library functions never print, show or save on their own; :mod:`filterscope.images` saves PNGs and
:mod:`filterscope.plots` draws figures when asked.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("filterscope")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

from .errors import (
    ChannelError,
    DeviceError,
    FilterscopeError,
    ImageError,
    InvalidObjectiveError,
    InvalidRecipeError,
    UnknownLayerError,
    RuntimeSettingError,
    UnknownModelError,
    WeightsError,
)
from .layers import Capture, LayerInfo, LayerRef, layer_info, list_layers, resolve_layer
from .objectives import Channel, ClassLogit, Neuron, Objective, channel, class_logit, neuron
from .render import PAPER_RECIPE, Recipe, RenderResult, StepInfo, iter_render, render, visualize_filters
from .runtime import Runtime
from .zoo import (
    DEFAULT_MODEL,
    LoadedModel,
    Preprocessing,
    imagenet_categories,
    list_models,
    load_model,
    register_model,
    wrap_model,
)

__all__ = [
    "__version__",
    # errors
    "FilterscopeError", "UnknownModelError", "UnknownLayerError", "ChannelError", "InvalidObjectiveError",
    "InvalidRecipeError", "ImageError", "WeightsError", "DeviceError", "RuntimeSettingError",
    # models
    "DEFAULT_MODEL", "LoadedModel", "Preprocessing", "load_model", "wrap_model", "list_models", "register_model",
    "imagenet_categories",
    # layers
    "LayerRef", "LayerInfo", "list_layers", "resolve_layer", "layer_info", "Capture",
    # objectives
    "Objective", "Channel", "Neuron", "ClassLogit", "channel", "neuron", "class_logit",
    # rendering
    "Recipe", "PAPER_RECIPE", "RenderResult", "StepInfo", "render", "iter_render", "visualize_filters",
    # how it runs
    "Runtime",
]
