"""The JSON API under ``/api/``: models and layers, a layer's grid, a unit, render jobs.

Responses are ``JSONResponse`` objects: the data is plain JSON already (the store keeps no NaN: SQLite
stores it as NULL), and FastAPI's checking of a returned dict costs more than the database work.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from ..atlas.records import FINISHED
from ..atlas.sections import Link
from ..atlas.stages.diff import diff_count
from ..errors import AtlasError, FilterscopeError
from .context import Microscope, microscope
from .diff import same_unit
from .explain import MAX_BYTES, UploadError, read_upload
from .jobs import QueueFullError
from .schemas import DatasetImage, Explained, Job, LayerGrid, Model, Unit, answers
from .views import View, grid_unit, job_view, link_views, unit_view, weights_view

__all__ = ["router"]

router = APIRouter(prefix="/api")
Scope = Annotated[Microscope, Depends(microscope)]


@router.get("/models", responses=answers(list[Model]))
def models(scope: Scope) -> Response:
    store, urls, out = scope.store(), scope.urls, []
    for model in store.models():
        layers = []
        for layer in store.layers(model.id):
            counts = store.render_counts(layer.id)
            found = store.latest_pass(layer.id)
            layers.append({"name": layer.name, "channels": layer.channels, "shape": layer.shape,
                           "rendered": sum(counts.get(s, 0) for s in FINISHED),
                           "not_improved": counts.get("not-improved", 0),
                           "failed": counts.get("failed", 0), "pending": counts.get("pending", 0),
                           "exemplar_images": found.images if found else 0, "url": urls.layer(model.name, layer.name)})
        out.append({"name": model.name, "weights": str(model.weights), "weights_hash": model.weights_hash,
                    "layers": layers})
    return JSONResponse(out)


@router.get("/m/{model}/{layer}", responses=answers(LayerGrid))
def layer_grid(scope: Scope, model: str, layer: str) -> Response:
    found, record = scope.find(model, layer)
    urls, trust = scope.urls, scope.store().unit_trust(record.id)
    units = [grid_unit(summary, trust.get(summary.unit), urls) for summary in scope.store().layer_summary(record.id)]
    return JSONResponse({"model": found.name, "layer": record.name, "channels": record.channels,
                         "shape": record.shape, "url": urls.layer(found.name, record.name), "units": units,
                         "can_render": scope.jobs is not None,
                         "map_page": urls.map_page(found.name, record.name)
                         if scope.store().maps_of_layer(record.id) else None,
                         "image_page": urls.image_page(found.name, record.name) if scope.explainer else None,
                         "diff_page": urls.diff_page(found.name, record.name)
                         if diff_count(scope.store(), record.id) else None})


@router.get("/m/{model}/{layer}/images", responses=answers(list[DatasetImage]))
def dataset_images(scope: Scope, model: str, layer: str) -> Response:
    """Dataset images of the layer's latest exemplar pass to explain (those that are some unit's exemplar)."""
    _, record = scope.find(model, layer)
    latest = scope.store().latest_pass(record.id)
    rows = scope.store().exemplar_images(latest.id) if latest is not None else []
    return JSONResponse([{"image": index, "name": Path(path).name, "source": scope.urls.exemplar_source(exemplar)}
                         for index, path, exemplar in rows])


async def _body(request: Request) -> bytes:
    """The request body, read no further than :data:`~.explain.MAX_BYTES` (a larger one is a 413, not memory)."""
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > MAX_BYTES:
            raise UploadError(f"The upload has more than {MAX_BYTES:,} bytes, the limit", 413)
        parts.append(part)
    return b"".join(parts)


@router.post("/m/{model}/{layer}/explain", responses=answers(Explained, 200, 400, 403, 413, 422))
async def explain(request: Request, scope: Scope, model: str, layer: str) -> Response:
    """The image page's data for the image in the request body (:mod:`.explain`)."""
    found, record = scope.find(model, layer)
    if scope.explainer is None:
        return JSONResponse({"detail": "This microscope holds no model (start it with --explain or --render)"},
                            status_code=403)
    data = await _body(request)
    image = read_upload(data)
    explainer = scope.explainer
    try:
        result = await run_in_threadpool(explainer.explain, image, record.name)
    except FilterscopeError as exc:  # a layer without a grid, nothing positive to factor
        return JSONResponse({"detail": str(exc)}, status_code=422)
    urls = scope.urls
    units = sorted({u for row in result["units"] for cell in row for u in cell}  # type: ignore[attr-defined]
                   | {u for row in result["groups"]["units"] for u in row})  # type: ignore[index]
    renders = scope.store().render_ids(record.id, units)
    result["links"] = {str(u): {"url": urls.unit(found.name, record.name, u),
                                "thumb": urls.render_thumb(renders[u]) if u in renders else None} for u in units}
    return JSONResponse(result)


@router.get("/m/{model}/{layer}/{unit:int}", responses=answers(Unit))
def unit_record(scope: Scope, model: str, layer: str, unit: int) -> Response:
    with scope.store().snapshot():  # one state of the atlas, however a build writes meanwhile
        return _unit_record(scope, model, layer, unit)


def _unit_record(scope: Microscope, model: str, layer: str, unit: int) -> Response:
    found, record = scope.find_unit(model, layer, unit)
    store = scope.store()
    active = scope.jobs.active.get((record.name, unit)) if scope.jobs is not None else None
    return JSONResponse(unit_view(
        store.unit(record.name, unit, found.name), record.receptive_field, scope.urls,
        cofiring=store.cofiring(record.name, unit, 8, found.name), weights=_weights(scope, found.name, record.id, unit),
        trust=store.unit_trust(record.id, unit).get(unit), can_render=scope.jobs is not None,
        job=job_view(active, scope.urls) if active is not None else None,
        same_unit=same_unit(scope, found.name, record, unit)))


def _weights(scope: Microscope, model: str, layer_id: int, unit: int) -> View | None:
    """The unit's circuit sections with links: each input (output) unit's page and render thumbnail."""
    store = scope.store()
    sections = store.circuit_sections(layer_id, unit)
    if not sections:
        return None
    layer_ids = {layer.name: layer.id for layer in store.layers(store.model(model).id)}

    def links(layer: str, items: Sequence[Link]) -> list[View]:
        renders = store.render_ids(layer_ids[layer], [i.unit for i in items]) if layer in layer_ids else {}
        return link_views(items, model, layer, renders, scope.urls)

    return weights_view(sections, links)


@router.post("/m/{model}/{layer}/{unit:int}/render", status_code=202, responses=answers(Job, 202, 403, 409, 429))
def render(scope: Scope, model: str, layer: str, unit: int) -> Response:
    found, record = scope.find_unit(model, layer, unit)
    jobs = scope.jobs
    if jobs is None:
        return JSONResponse({"detail": "This microscope was started without --render: it never writes"},
                            status_code=403)
    if found.name != jobs.model.name:
        return JSONResponse({"detail": f"This microscope renders {jobs.model.name}, not {found.name}"},
                            status_code=409)
    if any(r.status in FINISHED for r in scope.store().renders(record.id, unit)):
        return JSONResponse({"detail": f"Unit {unit} of {record.name} is already rendered"}, status_code=409)
    try:
        submitted = jobs.submit(record.name, unit)
    except QueueFullError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": "10"})
    return JSONResponse(job_view(submitted, scope.urls), status_code=202)


@router.get("/jobs/{job_id}", responses=answers(Job))
def job(scope: Scope, job_id: int) -> Response:
    found = scope.jobs.get(job_id) if scope.jobs is not None else None
    if found is None:
        raise AtlasError(f"No render job {job_id}")
    return JSONResponse(job_view(found, scope.urls))
