"""The layers of a build: every name resolved and every unit checked before the atlas is touched, then the model
(with its weights' fingerprint) and each layer recorded, as the :class:`~.stages.LayerPlan` s the stages work on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import AtlasError, ChannelError
from ..layers import LayerRef, layer_info, resolve_layer
from ..zoo.model import LoadedModel
from ..zoo.weights import weights_fingerprint
from .stages import LayerPlan
from .store import AtlasStore

__all__ = ["WantedLayer", "wanted_layers", "record_layers", "units_for"]


def units_for(units: Sequence[int] | dict[str, Sequence[int]] | None, layer: str, ref: LayerRef,
              channels: int, model: str) -> list[int]:
    """The wanted units of ``layer`` (all by default), each checked against its ``channels``."""
    wanted = units.get(layer, units.get(str(ref))) if isinstance(units, dict) else units
    chosen = list(range(channels)) if wanted is None else sorted({int(u) for u in wanted})
    bad = [u for u in chosen if not 0 <= u < channels]
    if bad:
        raise ChannelError(f"Unit {bad[0]} is out of range for layer {ref} of {model}, which has {channels} units "
                           f"(0-{channels - 1})")
    return chosen



@dataclass(frozen=True)
class WantedLayer:
    """A layer as asked for, checked before anything is written: its reference, shape and wanted units."""

    ref: LayerRef
    channels: int
    shape: tuple[int, ...]
    units: list[int]


def wanted_layers(loaded: LoadedModel, layers: str | Sequence[str],
            units: Sequence[int] | dict[str, Sequence[int]] | None) -> list[WantedLayer]:
    """Every layer name resolved and every unit checked (a bad one is an error before the atlas is touched)."""
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise AtlasError("No layer given")
    resolved = [(name, resolve_layer(loaded, name)) for name in names]
    infos = [layer_info(loaded, ref) for _, ref in resolved]
    return [WantedLayer(ref, info.channels, tuple(info.shape), units_for(units, name, ref, info.channels, loaded.name))
            for (name, ref), info in zip(resolved, infos)]


def record_layers(store: AtlasStore, loaded: LoadedModel, wanted: list[WantedLayer]) -> tuple[list[LayerPlan], str]:
    """Record the model (with its weights' fingerprint) and each layer; the build's layers and the fingerprint."""
    fingerprint = weights_fingerprint(loaded.module)
    model_id = store.add_model(loaded.name, loaded.weights, fingerprint, loaded.info.get("source"),
                               loaded.preprocessing)
    return [LayerPlan(w.ref, store.add_layer(model_id, str(w.ref), w.channels, list(w.shape)), w.channels, w.units,
                      w.shape[1:]) for w in wanted], fingerprint
