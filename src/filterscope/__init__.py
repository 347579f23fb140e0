"""filterscope: see what the filters of a convolutional network have learned.

Everything the docs' Python pages use is here, so ``import filterscope as fs`` is the only
import a user needs::

    import filterscope as fs
    model = fs.load_model("efficientnet_lite0")            # or fs.wrap_model(any_module, ...)
    fs.list_layers(model)                                  # names and output shapes
    result = fs.visualize_filters(model, "_blocks.15", [16, 266], seed=0)
    result = fs.render(model, "channel(_blocks.15, 16) - 0.5*channel(_blocks.15, 266)")
    fs.save_result(result, "out")                          # PNGs with metadata
    ranking = fs.rank_filters(model, ["cat.jpg"], "_blocks.15", k=10)

Library functions never print, show or save on their own; :func:`save_result` saves PNGs and
:mod:`filterscope.plots` draws figures when asked. The modules import one way only, from the bottom up:
errors, registry, tensors, data, files, images → zoo → layers, hooks → runtime (the runtime package: core,
precision, fusion, gradients) → engine (the optimization engine: objectives, objective_syntax, params, transforms
→ recipes → identity → results → render) → analysis, metrics → circuits, explain, plots → trust, audit, concepts,
compare, labels → atlas → microscope, demo → cli.

The names below are imported lazily (PEP 562): ``import filterscope`` itself is cheap, and each name
loads its module on first use, so the command line can install its signal handlers before torch loads.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

from ._version import __version__

_EXPORTS: dict[str, str] = {
    "UnitTrust": ".trust",
    "trust_units": ".trust",
    "independent_network": ".trust",
    "audit_layer": ".audit",
    "AuditReport": ".audit",
    "train_dictionary": ".concepts",
    "load_dictionary": ".concepts",
    "ConceptDictionary": ".concepts",
    "diff": ".compare",
    "ModelDiff": ".compare",
    "label_layer": ".labels",
    "UnitLabel": ".labels",
    "MapSettings": ".maps",
    "ActivationMap": ".maps",
    "Atlas": ".atlas",
    "DaskExecutor": ".atlas",
    "build_atlas": ".atlas",
    "list_dataset": ".atlas",
    "ReceptiveField": ".analysis",
    "receptive_field": ".analysis",
    "Box": ".analysis",
    "OcclusionStudy": ".analysis",
    "Ranking": ".analysis",
    "SensitivityMaps": ".analysis",
    "collect_images": ".analysis",
    "occlusion_study": ".analysis",
    "prepare_image": ".analysis",
    "rank_filters": ".analysis",
    "sensitivity_maps": ".analysis",
    "ChannelError": ".errors",
    "DeviceError": ".errors",
    "FilterscopeError": ".errors",
    "ImageError": ".errors",
    "InvalidObjectiveError": ".errors",
    "InvalidOptionError": ".errors",
    "InvalidRecipeError": ".errors",
    "RegionError": ".errors",
    "RuntimeSettingError": ".errors",
    "UnknownLayerError": ".errors",
    "UnknownModelError": ".errors",
    "WeightsError": ".errors",
    "AtlasError": ".errors",
    "ArgumentTypeError": ".errors",
    "load_image": ".images",
    "read_png_metadata": ".images",
    "Capture": ".layers",
    "LayerInfo": ".layers",
    "LayerRef": ".layers",
    "layer_info": ".layers",
    "list_layers": ".layers",
    "resolve_layer": ".layers",
    "Quality": ".metrics",
    "measure": ".metrics",
    "reference_crops": ".metrics",
    "score": ".metrics",
    "as_objectives": ".engine.objective_syntax",
    "parse_objective": ".engine.objective_syntax",
    "OBJECTIVES": ".engine.objectives",
    "Channel": ".engine.objectives",
    "ClassLogit": ".engine.objectives",
    "Direction": ".engine.objectives",
    "Diversity": ".engine.objectives",
    "LayerEnergy": ".engine.objectives",
    "Neuron": ".engine.objectives",
    "Objective": ".engine.objectives",
    "channel": ".engine.objectives",
    "class_logit": ".engine.objectives",
    "direction": ".engine.objectives",
    "diversity": ".engine.objectives",
    "layer_energy": ".engine.objectives",
    "neuron": ".engine.objectives",
    "register_objective": ".engine.objectives",
    "PARAMS": ".engine.params",
    "Param": ".engine.params",
    "register_param": ".engine.params",
    "PAPER_RECIPE": ".engine.recipes",
    "RECIPES": ".engine.recipes",
    "Recipe": ".engine.recipes",
    "get_recipe": ".engine.recipes",
    "list_recipes": ".engine.recipes",
    "Stages": ".engine.render",
    "iter_render": ".engine.render",
    "render": ".engine.render",
    "visualize_filters": ".engine.render",
    "RenderResult": ".engine.results",
    "StepInfo": ".engine.results",
    "ProgressBar": ".progress",
    "output_name": ".engine.results",
    "save_result": ".engine.results",
    "PrecisionChoice": ".runtime.precision",
    "choose_precision": ".runtime.precision",
    "choose_runtime": ".engine.render",
    "Forward": ".runtime",
    "Runtime": ".runtime",
    "parse_memory": ".runtime",
    "to_pil": ".tensors",
    "to_tensor": ".tensors",
    "TRANSFORMS": ".engine.transforms",
    "Transform": ".engine.transforms",
    "TransformStack": ".engine.transforms",
    "register_transform": ".engine.transforms",
    "DEFAULT_MODEL": ".zoo",
    "MODELS": ".zoo",
    "LoadedModel": ".zoo",
    "Preprocessing": ".zoo",
    "imagenet_categories": ".zoo",
    "list_models": ".zoo",
    "load_model": ".zoo",
    "register_model": ".zoo",
    "wrap_model": ".zoo",
    "reload_model": ".zoo",
    "WeightsSource": ".zoo",
    "RenderIdentity": ".engine.identity",
    "Circuit": ".circuits",
    "ExpandedWeights": ".circuits",
    "circuit": ".circuits",
    "class_effects": ".circuits",
    "expanded_weights": ".circuits",
    "NeuronGroups": ".explain",
    "SemanticDictionary": ".explain",
    "SpatialAttribution": ".explain",
    "neuron_groups": ".explain",
    "semantic_dictionary": ".explain",
    "spatial_attribution": ".explain",
    "accentuate": ".explain",
    "caricature": ".explain",
    "invert": ".explain",
}

__all__ = [
    "__version__",
    # errors
    "FilterscopeError", "UnknownModelError", "UnknownLayerError", "ChannelError", "InvalidObjectiveError",
    "InvalidRecipeError", "InvalidOptionError", "ImageError", "RegionError", "WeightsError", "DeviceError",
    "RuntimeSettingError", "AtlasError", "ArgumentTypeError",
    # models
    "DEFAULT_MODEL", "MODELS", "LoadedModel", "Preprocessing", "load_model", "wrap_model", "list_models",
    "register_model", "imagenet_categories", "WeightsSource", "reload_model",
    # layers
    "LayerRef", "LayerInfo", "list_layers", "resolve_layer", "layer_info", "Capture",
    # objectives
    "Objective", "Channel", "Neuron", "ClassLogit", "LayerEnergy", "Direction", "Diversity", "channel", "neuron",
    "class_logit", "layer_energy", "direction", "diversity", "OBJECTIVES", "register_objective", "parse_objective",
    "as_objectives",
    # parameterizations, transforms, recipes
    "Param", "PARAMS", "register_param", "Transform", "TransformStack", "TRANSFORMS", "register_transform",
    "Recipe", "PAPER_RECIPE", "RECIPES", "get_recipe", "list_recipes",
    # rendering and its results
    "Stages", "render", "iter_render", "visualize_filters", "RenderResult", "StepInfo", "save_result", "output_name",
    "RenderIdentity", "ProgressBar",
    # how it runs
    "Runtime", "Forward", "parse_memory", "choose_runtime", "choose_precision", "PrecisionChoice",
    # images
    "load_image", "read_png_metadata", "to_pil", "to_tensor",
    # quality scores
    "score", "Quality", "measure", "reference_crops",
    # image-driven analysis
    "rank_filters", "occlusion_study", "sensitivity_maps", "Box", "Ranking", "OcclusionStudy", "SensitivityMaps",
    "prepare_image", "collect_images", "receptive_field", "ReceptiveField",
    # circuits
    "circuit", "expanded_weights", "class_effects", "Circuit", "ExpandedWeights",
    # what an image is made of
    "semantic_dictionary", "neuron_groups", "spatial_attribution", "SemanticDictionary", "NeuronGroups",
    "SpatialAttribution", "caricature", "invert", "accentuate",
    # trust: faithfulness scores and descriptions of units
    "trust_units", "UnitTrust", "independent_network",
    # the red-team audit of the trust signals
    "audit_layer", "AuditReport",
    # concepts: sparse dictionaries of a layer
    "train_dictionary", "load_dictionary", "ConceptDictionary",
    # model diff: what two networks share and where they differ
    "diff", "ModelDiff",
    # labels with evidence: what a unit detects, as a scored formula with a p-value
    "label_layer", "UnitLabel",
    # atlases, and activation atlases of their layers
    "Atlas", "build_atlas", "list_dataset", "DaskExecutor", "MapSettings", "ActivationMap",
]


class _Package(types.ModuleType):
    """The package module: a submodule named like a public function (``render``) does not replace the
    function when it is imported (Python binds imported submodules as attributes of their package)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    """Load a public name (or a submodule) on first use."""
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value
        return value
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs
    from .analysis import (
        Box,
        OcclusionStudy,
        Ranking,
        ReceptiveField,
        SensitivityMaps,
        collect_images,
        occlusion_study,
        prepare_image,
        rank_filters,
        sensitivity_maps,
    )
    from .analysis.receptive_field import receptive_field
    from .atlas import Atlas, DaskExecutor, build_atlas, list_dataset
    from .audit import AuditReport, audit_layer
    from .circuits import Circuit, ExpandedWeights, class_effects, expanded_weights
    from .circuits.circuit import circuit
    from .compare import ModelDiff, diff
    from .concepts import ConceptDictionary, load_dictionary, train_dictionary
    from .engine.identity import RenderIdentity
    from .engine.objective_syntax import as_objectives, parse_objective
    from .engine.objectives import (
        OBJECTIVES,
        Channel,
        ClassLogit,
        Direction,
        Diversity,
        LayerEnergy,
        Neuron,
        Objective,
        channel,
        class_logit,
        direction,
        diversity,
        layer_energy,
        neuron,
        register_objective,
    )
    from .engine.params import PARAMS, Param, register_param
    from .engine.recipes import PAPER_RECIPE, RECIPES, Recipe, get_recipe, list_recipes
    from .engine.render import Stages, iter_render, render, visualize_filters
    from .engine.results import RenderResult, StepInfo, output_name, save_result
    from .engine.transforms import TRANSFORMS, Transform, TransformStack, register_transform
    from .errors import (
        ArgumentTypeError,
        AtlasError,
        ChannelError,
        DeviceError,
        FilterscopeError,
        ImageError,
        InvalidObjectiveError,
        InvalidOptionError,
        InvalidRecipeError,
        RegionError,
        RuntimeSettingError,
        UnknownLayerError,
        UnknownModelError,
        WeightsError,
    )
    from .explain import (
        NeuronGroups,
        SemanticDictionary,
        SpatialAttribution,
        accentuate,
        caricature,
        invert,
        neuron_groups,
        semantic_dictionary,
        spatial_attribution,
    )
    from .images import load_image, read_png_metadata
    from .labels import UnitLabel, label_layer
    from .layers import Capture, LayerInfo, LayerRef, layer_info, list_layers, resolve_layer
    from .maps import ActivationMap, MapSettings
    from .metrics import Quality, measure, reference_crops, score
    from .runtime.core import Forward, Runtime, parse_memory
    from .tensors import to_pil, to_tensor
    from .trust import UnitTrust, independent_network, trust_units
    from .zoo import (
        DEFAULT_MODEL,
        MODELS,
        LoadedModel,
        Preprocessing,
        WeightsSource,
        imagenet_categories,
        list_models,
        load_model,
        register_model,
        reload_model,
        wrap_model,
    )
