"""Optimized images of units for the commands' figures (``circuit``, ``explain``): an atlas's, else a render kept
from an earlier run in the output folder (found by its identity), else rendered now and kept."""

from pathlib import Path
from typing import Optional

from PIL import Image

from ..atlas.store import AtlasStore
from ..engine.identity import RenderIdentity, RenderSettings
from ..engine.objectives import Channel
from ..engine.recipes import get_recipe
from ..engine.render import render
from ..engine.results import finished_outputs, save_result
from ..errors import AtlasError
from ..runtime.core import Runtime
from ..zoo.model import LoadedModel
from ..zoo.weights import weights_fingerprint
from .progress import RenderProgress

__all__ = ["unit_images"]


def unit_images(loaded: LoadedModel, store: Optional[AtlasStore], layer: str, units: list[int], recipe: str, seed: int,
            quiet: bool, cache: Path) -> dict[int, Image.Image]:
    """Optimized images of ``units`` of ``layer``: the atlas's first finished render, else one rendered before into
    ``cache`` with the same identity (weights, objective, recipe, seed, settings), else rendered now and kept there."""
    found: dict[int, Image.Image] = {}
    if store is not None:
        for unit in units:
            try:
                renders = [r.file for r in store.unit(layer, unit, loaded.name).renders if r.file]
            except AtlasError:
                break
            if renders:
                found[unit] = Image.open(store.path / renders[0]).convert("RGB")
    missing = [u for u in units if u not in found]
    if not missing:
        return found
    chosen, runtime = get_recipe(recipe), Runtime()
    objectives = [Channel(layer, u).resolve(loaded) for u in missing]
    weights_hash, settings = weights_fingerprint(loaded.module), RenderSettings.of(loaded, runtime)
    identities = [RenderIdentity.of(weights_hash, o, chosen, seed, settings) for o in objectives]
    done = finished_outputs(cache, loaded.name, objectives, [[i] for i in identities]) if cache.is_dir() else {}
    for index, paths in done.items():
        found[missing[index]] = Image.open(paths[0]).convert("RGB")
    todo = [i for i in range(len(missing)) if i not in done]
    if todo:
        progress = RenderProgress(f"rendering {len(todo)} unit(s) of {layer} ({recipe} recipe)", None, quiet)
        try:
            result = render(loaded, [objectives[i] for i in todo], recipe=chosen, seed=seed, runtime=runtime,
                            callback=progress)
        finally:
            progress.close()
        save_result(result, cache, identities=[identities[i] for i in todo])
        found.update(zip((missing[i] for i in todo), result.to_pil()))
    return found
