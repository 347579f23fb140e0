"""The diff page of a layer (its newest diff against another network, :mod:`filterscope.compare`) and its JSON;
:func:`same_unit`, a unit's match there for its page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..atlas.records import LayerRecord, ModelRecord
from ..atlas.stages.diff import diff_count, model_diffs
from ..compare import ModelDiff
from ..errors import AtlasError
from .context import Microscope, microscope
from .pages import page
from .schemas import Diff, answers, page_responses
from .urls import Urls
from .views import View

__all__ = ["router", "same_unit"]

router = APIRouter()
Scope = Annotated[Microscope, Depends(microscope)]


def _newest(scope: Microscope, model: str, layer: str) -> tuple[ModelRecord, LayerRecord, ModelDiff]:
    found, record = scope.find(model, layer)
    diffs = model_diffs(scope.store(), record.id, limit=1)
    if not diffs:
        raise AtlasError(f"No diff of {record.name}: make one with filterscope atlas build ATLAS -l {record.name} "
                         "--dataset DIR --diff-with MODEL")
    return found, record, diffs[0]


def same_unit(scope: Microscope, model: str, record: LayerRecord, unit: int) -> View | None:
    """Unit ``unit``'s match in the layer's newest diff, with the diff page (``None`` without a diff)."""
    diffs = model_diffs(scope.store(), record.id, limit=1)
    if not diffs or not diffs[0].matches:
        return None
    match = diffs[0].matches[0]
    found = match.of(unit)
    if found is None:
        return None
    return {"model": diffs[0].model_b, "layer": match.layer_b, "unit": found.b, "correlation": found.correlation,
            "buddies": found.buddies, "matched": found.correlation > match.threshold,
            "diff_page": scope.urls.diff_page(model, record.name)}


def diff_view(report: ModelDiff, model: str, layer: str, urls: Urls, count: int, names: list[str]) -> View:
    """A diff as the page reads it: the report, each match with the page of A's unit."""
    data = report.to_dict()
    data["matches"] = [{**m.to_dict(), "matches": [{**x.to_dict(), "url": urls.unit(model, layer, x.a)}
                                                   for x in m.matches]} for m in report.matches]
    return {**data, "model": model, "layer": layer, "layer_url": urls.layer(model, layer), "diffs": count,
            "image_names": names}


@router.get("/m/{model}/{layer}/diff", response_class=HTMLResponse, responses=page_responses())
def diff_page(request: Request, scope: Scope, model: str, layer: str) -> Response:
    found, record, _ = _newest(scope, model, layer)
    return page(scope, request, "diff", f"{found.name} {record.name}: diff", model=found.name, layer=record.name,
                layer_url=scope.urls.layer(found.name, record.name), api=scope.urls.api_diff(found.name, record.name))


@router.get("/api/m/{model}/{layer}/diff", responses=answers(Diff))
def diff_data(scope: Scope, model: str, layer: str) -> Response:
    found, record, newest = _newest(scope, model, layer)
    store = scope.store()
    latest = store.latest_pass(record.id)
    names = [Path(p).name for p in store.pass_images(latest.id)][:newest.images] if latest is not None else []
    return JSONResponse(diff_view(newest, found.name, record.name, scope.urls, diff_count(store, record.id), names))
