"""The map page of a layer (its activation atlas), its JSON and its images: icons, and member patches cut from
the dataset images around each sample's position, sized to the receptive field. Files and images are looked up
through the atlas's records, never taken from a path in the request."""

from __future__ import annotations

import functools
import io
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..atlas.records import LayerRecord, ModelRecord
from ..errors import AtlasError, FilterscopeError
from ..maps.result import member_patch
from .context import Microscope, microscope
from .images import cached
from .pages import page
from .schemas import ActivationMap, MapCell, answers, file_responses, page_responses

__all__ = ["router", "MEMBERS_SHOWN", "UNITS_SHOWN"]

router = APIRouter()
Scope = Annotated[Microscope, Depends(microscope)]

MEMBERS_SHOWN = 24
"""A clicked cell shows this many of its member patches."""
UNITS_SHOWN = 8
"""... and its units with the largest mean activation."""
PATCH_SIDE = 96


def _latest(scope: Microscope, model: str, layer: str) -> tuple[ModelRecord, LayerRecord, int]:
    """The model, the layer and the atlas id of the layer's newest map."""
    found, record = scope.find(model, layer)
    maps = scope.store().maps_of_layer(record.id)
    if not maps:
        raise AtlasError(f"No activation atlas of {record.name}: make one with filterscope atlas map ATLAS -l "
                         f"{record.name}")
    return found, record, maps[0].id


@router.get("/m/{model}/{layer}/map", response_class=HTMLResponse, responses=page_responses())
def map_page(request: Request, scope: Scope, model: str, layer: str) -> Response:
    found, record, _ = _latest(scope, model, layer)
    name, layer_name = found.name, record.name
    return page(scope, request, "map", f"{name} {layer_name}: activation atlas", model=name, layer=layer_name,
                layer_url=scope.urls.layer(name, layer_name), api=scope.urls.api_map(name, layer_name))


@router.get("/api/m/{model}/{layer}/map", responses=answers(ActivationMap))
def map_data(scope: Scope, model: str, layer: str) -> Response:
    found, layer_record, map_id = _latest(scope, model, layer)
    name, layer_name = found.name, layer_record.name
    store, urls = scope.store(), scope.urls
    record = store.map_by_id(map_id)
    cells = [{"cell": c.cell, "row": c.row, "col": c.col, "count": c.count, "label": c.label_name,
              "label_share": c.label_share, "cosine": c.cosine, "status": c.status,
              "icon": urls.map_icon(map_id, c.cell) if c.file else None,
              "api": urls.api_map_cell(name, layer_name, c.cell)} for c in store.map_cells(map_id)]
    return JSONResponse({"model": name, "layer": layer_name, "grid": record.settings.grid,
                         "settings": record.settings.to_dict(), "trustworthiness": record.trustworthiness,
                         "cells": cells,
                         "layer_url": urls.layer(name, layer_name)})


@functools.lru_cache(maxsize=32)
def _map_arrays(root: str, map_id: int, cells_file: str, places_file: str, means_file: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A map's per-sample cells, the samples' places and the cells' means (read once per map)."""
    return (np.load(f"{root}/{cells_file}"), np.load(f"{root}/{places_file}", mmap_mode="r"),
            np.load(f"{root}/{means_file}"))


def _arrays(scope: Microscope, map_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    store = scope.store()
    record = store.map_by_id(map_id)
    samples = store.map_samples_by_id(record.samples_id)
    return _map_arrays(str(scope.root), map_id, record.cells_file, samples.places_file, record.means_file)


@router.get("/api/m/{model}/{layer}/map/cells/{cell}", responses=answers(MapCell))
def map_cell(scope: Scope, model: str, layer: str, cell: int) -> Response:
    found, record, map_id = _latest(scope, model, layer)
    name, layer_name = found.name, record.name
    store, urls = scope.store(), scope.urls
    cells = store.map_cells(map_id)
    index = next((k for k, c in enumerate(cells) if c.cell == cell), None)
    if index is None:
        raise AtlasError(f"Cell {cell} is not a kept cell of the activation atlas of {layer_name}")
    of, places, means = _arrays(scope, map_id)
    members = np.flatnonzero(of == cell)
    images = store.pass_images(store.map_source(map_id)[0])
    shown = [{"sample": int(s), "image": images[int(places[s, 0])].rsplit("/", 1)[-1], "y": int(places[s, 1]),
              "x": int(places[s, 2]), "patch": urls.map_patch(map_id, int(s))} for s in members[:MEMBERS_SHOWN]]
    mean = means[index]
    top = [int(u) for u in np.argsort(-mean, kind="stable")[:UNITS_SHOWN]]
    renders = store.render_ids(record.id, top)
    units = [{"unit": u, "value": float(mean[u]), "url": urls.unit(name, layer_name, u),
              "thumb": urls.render_thumb(renders[u]) if u in renders else None} for u in top]
    c = cells[index]
    return JSONResponse({"cell": cell, "row": c.row, "col": c.col, "count": c.count, "label": c.label_name,
                         "label_share": c.label_share, "cosine": c.cosine, "members": shown, "units": units})


@router.get("/img/map/{map_id}/{cell}", response_class=Response, responses=file_responses("image/png"))
def map_icon(request: Request, scope: Scope, map_id: int, cell: int) -> Response:
    found = next((c for c in scope.store().map_cells(map_id) if c.cell == cell and c.file), None)
    if found is None or found.file is None:
        raise AtlasError(f"No icon for cell {cell} of map {map_id}")
    path = scope.root / found.file
    if not path.is_file():
        raise AtlasError(f"The icon of cell {cell} of map {map_id} is missing from the atlas folder")
    stat = path.stat()
    return cached(request, f'"m{map_id}-{cell}-{stat.st_mtime_ns:x}"', path=path)


@router.get("/img/patch/{map_id}/{sample}", response_class=Response, responses=file_responses("image/jpeg"))
def map_patch(request: Request, scope: Scope, map_id: int, sample: int) -> Response:
    store = scope.store()
    _, places, _ = _arrays(scope, map_id)
    if not 0 <= sample < len(places) or places[sample, 0] < 0:
        raise AtlasError(f"No sample {sample} in map {map_id}")
    pass_id, layer_id = store.map_source(map_id)
    path = store.pass_image(pass_id, int(places[sample, 0]))
    layer = store.layer_by_id(layer_id)
    model = next(m for m in store.models() if m.id == layer.model_id)
    fit = store.pass_fit(pass_id)
    try:
        image = member_patch(path, int(places[sample, 1]), int(places[sample, 2]), model.preprocessing,
                             layer.receptive_field, fit)
    except (FilterscopeError, OSError) as exc:
        raise AtlasError(f"The dataset image of sample {sample} cannot be read: {exc}") from None
    image = image.convert("RGB")
    image.thumbnail((PATCH_SIDE, PATCH_SIDE))  # only ever shrinks
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return cached(request, f'"p{map_id}-{sample}"', body=buffer.getvalue(), media_type="image/jpeg")
