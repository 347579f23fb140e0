"""The JSON API under ``/api/``: models and layers, a layer's grid, a unit, render jobs.

Responses are ``JSONResponse`` objects: the data is plain JSON already (the store keeps no NaN: SQLite
stores it as NULL), and FastAPI's checking of a returned dict costs more than the database work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from ..analysis.receptive_field import ReceptiveField
from ..atlas.records import FINISHED, ExemplarRecord, JSONData
from ..errors import AtlasError, FilterscopeError
from ..trust.unit import UnitTrust
from .context import Microscope, microscope
from .explain import MAX_BYTES, UploadError, read_upload
from .jobs import Job as RenderJob
from .jobs import QueueFullError
from .schemas import DatasetImage, Explained, Job, LayerGrid, Model, Unit, answers

__all__ = ["router", "marker"]

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
    urls, units = scope.urls, []
    trust = scope.store().unit_trust(record.id)
    for summary in scope.store().layer_summary(record.id):
        row = summary.to_dict()
        row.update(_trust_summary(trust.get(summary.unit)))
        row["thumb"] = urls.render_thumb(summary.render) if summary.render else None
        row["exemplar_thumb"] = urls.exemplar_thumb(summary.exemplar) if summary.exemplar else None
        units.append(row)
    return JSONResponse({"model": found.name, "layer": record.name, "channels": record.channels,
                         "shape": record.shape, "url": urls.layer(found.name, record.name), "units": units,
                         "can_render": scope.jobs is not None,
                         "map_page": urls.map_page(found.name, record.name)
                         if scope.store().maps_of_layer(record.id) else None,
                         "image_page": urls.image_page(found.name, record.name) if scope.explainer else None})


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
    store, urls = scope.store(), scope.urls
    found_unit = store.unit(record.name, unit, found.name)
    data = found_unit.to_dict()
    for render, item in zip(data["renders"], found_unit.renders):
        render["image"] = urls.render_image(item.id) if item.file else None
    for kind, exemplars in found_unit.exemplars.items():
        for e, exemplar in zip(data["exemplars"][kind], exemplars):
            e.update(_exemplar_links(scope, found.name, record.name, unit, exemplar))
            e["marker"] = marker(record.receptive_field, exemplar) if exemplar.kind != "mean" else None
    data["cofiring"] = [{"unit": u, "correlation": c, "url": urls.unit(found.name, record.name, u)}
                        for u, c in store.cofiring(record.name, unit, 8, found.name)]
    data["weights"] = _weights(scope, found.name, record.id, unit)
    found_trust = store.unit_trust(record.id, unit).get(unit)
    data["trust"] = found_trust.to_dict() if found_trust is not None else None
    data["prev"] = urls.unit(found.name, record.name, unit - 1) if unit > 0 else None
    data["next"] = urls.unit(found.name, record.name, unit + 1) if unit + 1 < record.channels else None
    data["layer_url"] = urls.layer(found.name, record.name)
    data["can_render"] = scope.jobs is not None
    data["render_url"] = urls.api_render(found.name, record.name, unit)
    active = scope.jobs.active.get((record.name, unit)) if scope.jobs is not None else None
    data["job"] = _job(scope, active) if active is not None else None
    return JSONResponse(data)


def _trust_summary(record: UnitTrust | None) -> JSONData:
    """A unit's trust numbers for the layer grid's sorting and filtering (``None`` without a record)."""
    if record is None:
        return {"flags": None, "path_share": None, "afc_renders": None, "afc_exemplars": None}
    renders, exemplars = record.score("renders"), record.score("exemplars")
    return {"flags": list(record.flags), "path_share": record.paths.share if record.paths else None,
            "afc_renders": renders.score if renders else None, "afc_exemplars": exemplars.score if exemplars else None,
            "description": record.description.text}


def _weights(scope: Microscope, model: str, layer_id: int, unit: int) -> JSONData | None:
    """The unit's circuit sections with links: each input (output) unit's page and render thumbnail."""
    store, urls = scope.store(), scope.urls
    sections = store.circuit_sections(layer_id, unit)
    if not sections:
        return None
    layer_ids = {layer.name: layer.id for layer in store.layers(store.model(model).id)}

    def link(layer: str, rows: list[JSONData]) -> None:
        renders = store.render_ids(layer_ids[layer], [r["unit"] for r in rows]) if layer in layer_ids else {}
        for row in rows:
            row["url"] = urls.unit(model, layer, row["unit"])
            row["thumb"] = urls.render_thumb(renders[row["unit"]]) if row["unit"] in renders else None

    view = sections.to_dict()  # the records as JSON; the links below are the view's own
    inputs, outputs = view["inputs"], view["outputs"]
    if sections.inputs is not None and isinstance(inputs, dict):
        for rows in inputs["inputs"].values():
            link(sections.inputs.source, rows)
    if sections.outputs is not None and isinstance(outputs, dict):
        link(sections.outputs.layer, outputs["excite"])
        link(sections.outputs.layer, outputs["inhibit"])
    return view


def _job(scope: Microscope, job: RenderJob) -> JSONData:
    """A render job as its answer: the record and its URL."""
    return {**job.to_dict(), "url": scope.urls.api_job(job.id)}


def _exemplar_links(scope: Microscope, model: str, layer: str, unit: int, item: ExemplarRecord) -> JSONData:
    urls = scope.urls
    return {"crop": urls.exemplar_crop(item.id) if item.has_crop else None,
            "thumb": urls.exemplar_thumb(item.id) if item.has_crop else None,
            "source": urls.exemplar_source(item.id), "page": urls.exemplar_page(model, layer, unit, item.id)}


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
    return JSONResponse(_job(scope, submitted), status_code=202)


@router.get("/jobs/{job_id}", responses=answers(Job))
def job(scope: Scope, job_id: int) -> Response:
    found = scope.jobs.get(job_id) if scope.jobs is not None else None
    if found is None:
        raise AtlasError(f"No render job {job_id}")
    return JSONResponse(_job(scope, found))


def marker(field: ReceptiveField | None, exemplar: ExemplarRecord) -> list[float] | None:
    """Where the maximum's position lies in the crop, as fractions ``[x, y]`` of its width and height."""
    if not field:
        return None
    x0, y0, x1, y1 = exemplar.box
    if field.whole:
        cx, cy = (exemplar.x + 0.5) * field.stride_x, (exemplar.y + 0.5) * field.stride_y
    else:
        cx = field.offset_x + exemplar.x * field.stride_x + field.width / 2
        cy = field.offset_y + exemplar.y * field.stride_y + field.height / 2
    if x1 <= x0 or y1 <= y0:
        return None
    return [min(max((cx - x0) / (x1 - x0), 0.0), 1.0), min(max((cy - y0) / (y1 - y0), 0.0), 1.0)]
