"""Model zoo: registry, architectures, weights and preprocessing."""

from . import catalog as _catalog  # noqa: F401  (fills the registry)
from .catalog import DEFAULT_MODEL
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from .registry import (
    MODELS,
    LoadedModel,
    ModelSpec,
    coerce_model,
    frozen,
    get_model_spec,
    imagenet_categories,
    list_models,
    load_model,
    register_model,
    resolve_device,
    wrap_model,
)
from .weights import PackageWeights, UrlWeights, hub_checkpoint_dir, read_state_dict

__all__ = [
    "DEFAULT_MODEL",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LoadedModel",
    "MODELS",
    "ModelSpec",
    "PackageWeights",
    "Preprocessing",
    "UrlWeights",
    "coerce_model",
    "frozen",
    "get_model_spec",
    "hub_checkpoint_dir",
    "imagenet_categories",
    "list_models",
    "load_model",
    "read_state_dict",
    "register_model",
    "resolve_device",
    "wrap_model",
]
