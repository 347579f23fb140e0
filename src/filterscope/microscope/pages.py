"""The HTML pages: small shells that ``static/app.js`` fills from the JSON API (:mod:`.api`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from .._version import __version__
from ..errors import AtlasError
from .context import Microscope, microscope
from .schemas import page_responses

__all__ = ["router"]

router = APIRouter()
Scope = Annotated[Microscope, Depends(microscope)]


def page(scope: Microscope, request: Request, kind: str, title: str, **data: Any) -> Response:
    """The page shell of ``kind``; ``data`` (with the URLs the script needs) goes to ``static/app.js``."""
    data["home"] = scope.urls.home()
    response = scope.templates.TemplateResponse(request, "page.html", {
        "kind": kind, "title": title, "data": data, "atlas": str(scope.root), "version": __version__,
        "urls": scope.urls})
    response.headers["Cache-Control"] = "no-cache"
    return response


@router.get("/", response_class=HTMLResponse, responses=page_responses())
def home(request: Request, scope: Scope) -> Response:
    return page(scope, request, "home", f"atlas {scope.root.name}", api=scope.urls.api_models())


@router.get("/m/{model}/{layer}", response_class=HTMLResponse, responses=page_responses())
def layer_page(request: Request, scope: Scope, model: str, layer: str) -> Response:
    found, record = scope.find(model, layer)
    return page(scope, request, "layer", f"{found.name} {record.name}", model=found.name, layer=record.name,
                api=scope.urls.api_layer(found.name, record.name))


@router.get("/m/{model}/{layer}/image", response_class=HTMLResponse, responses=page_responses())
def image_page(request: Request, scope: Scope, model: str, layer: str) -> Response:
    found, record = scope.find(model, layer)
    return page(scope, request, "image", f"{found.name} {record.name}: an image", model=found.name, layer=record.name,
                layer_url=scope.urls.layer(found.name, record.name),
                api=scope.urls.api_explain(found.name, record.name),
                images=scope.urls.api_images(found.name, record.name), can_explain=scope.explainer is not None)


@router.get("/m/{model}/{layer}/{unit:int}", response_class=HTMLResponse, responses=page_responses())
def unit_page(request: Request, scope: Scope, model: str, layer: str, unit: int) -> Response:
    found, record = scope.find_unit(model, layer, unit)
    return page(scope, request, "unit", f"{found.name} {record.name} unit {unit}", model=found.name,
                layer=record.name, unit=unit, api=scope.urls.api_unit(found.name, record.name, unit))


@router.get("/m/{model}/{layer}/{unit:int}/exemplar/{exemplar}", response_class=HTMLResponse,
            responses=page_responses())
def exemplar_page(request: Request, scope: Scope, model: str, layer: str, unit: int, exemplar: int) -> Response:
    found, record = scope.find(model, layer)
    item, layer_id, owner = scope.store().exemplar(exemplar)
    if layer_id != record.id or owner != unit:
        raise AtlasError(f"Exemplar {exemplar} is not one of unit {unit} of {record.name}")
    return page(scope, request, "exemplar", f"{found.name} {record.name} unit {unit}: {Path(item.path).name}",
                model=found.name, layer=record.name, unit=unit, exemplar=exemplar, path=Path(item.path).name,
                kind_=item.kind, value=item.value, box=item.source_box, base=scope.urls.layer(found.name, record.name),
                unit_url=scope.urls.unit(found.name, record.name, unit), source=scope.urls.exemplar_source(exemplar))
