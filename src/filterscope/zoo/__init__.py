"""Model zoo: the loaded-model record (:mod:`.model`), the registry, architectures, weights and where they came
from, preprocessing, and models from files, modules and plugins (:mod:`.sources`, with the one public
:func:`load_model`)."""

from . import catalog as _catalog  # noqa: F401  (fills the registry)
from .catalog import DEFAULT_MODEL
from .model import LoadedModel, coerce_model, frozen, resolve_device, wrap_model
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from .registry import MODELS, ModelSpec, get_model_spec, imagenet_categories, list_models, register_model
from .sources import ENTRY_POINT_GROUP, load_from_spec, load_model, read_preprocessing, reload_model
from .weights import (
    PackageWeights,
    UrlWeights,
    WeightsSource,
    hub_checkpoint_dir,
    read_state_dict,
    weights_fingerprint,
)

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
    "load_from_spec",
    "reload_model",
    "WeightsSource",
    "read_preprocessing",
    "ENTRY_POINT_GROUP",
    "read_state_dict",
    "register_model",
    "resolve_device",
    "wrap_model",
    "weights_fingerprint",
]
