"""The microscope's web application: pages, a JSON API and images, all from one atlas folder.

:func:`create_app` assembles one router per page family: :mod:`.pages` (``/``, ``/m/MODEL/LAYER``,
``/m/MODEL/LAYER/UNIT``, ``.../exemplar/ID``: small HTML shells that the plain JavaScript in
``static/app.js`` fills), :mod:`.api` (JSON under ``/api/``) and :mod:`.images` (by id under ``/img/``).
URLs come from one builder (:mod:`.urls`); handlers read typed records through the store's read side, each
request thread with its own read-only SQLite connection (:mod:`.context`). Anything unknown is a 404: an
HTML page for pages, JSON under ``/api/``, ``/img/`` and ``/static/``. The server writes only through
render jobs (``--render``, :mod:`.jobs`). A new page family is a router here.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from .._version import __version__
from ..atlas.store import AtlasStore
from ..errors import AtlasError
from . import api, diff, images, maps, pages, schemas
from .context import HERE, Microscope
from .explain import Explainer, UploadError
from .jobs import RenderJobs

__all__ = ["create_app"]


ROUTERS = [pages.router, api.router, images.router, maps.router, diff.router]
"""The microscope's page families; each capability brings its own router."""


def create_app(atlas: str | Path, *, jobs: RenderJobs | None = None, explainer: Explainer | None = None) -> FastAPI:
    """The microscope for the atlas in ``atlas`` (checked now: a missing or unreadable atlas raises
    :class:`~filterscope.errors.AtlasError`). With ``jobs``, pages can render missing units; with ``explainer``
    (the atlas's model), the image page explains uploaded images."""
    root = Path(atlas)
    AtlasStore(root, create=False, readonly=True).close()
    app = FastAPI(title="filterscope microscope", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.microscope = scope = Microscope(root, jobs, explainer)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.openapi = lambda: schemas.openapi(app)  # type: ignore[method-assign]
    for router in ROUTERS:  # in any order: a unit's routes take only a number ({unit:int}), so .../map is no unit
        # the routers' routes join the app's own list: FastAPI 0.165's include_router keeps each router as a
        # nested level that every request walks (measured: 20% fewer requests/s, benchmarks/microscope_load.py)
        app.router.routes.extend(router.routes)

    def not_found(request: Request, detail: str) -> Response:
        if scope.urls.is_data(request.url.path):  # not pages: JSON
            return JSONResponse({"detail": detail}, status_code=404)
        return scope.templates.TemplateResponse(request, "not_found.html", {"detail": detail, "atlas": str(root),
                                                                            "urls": scope.urls}, status_code=404)

    @app.exception_handler(AtlasError)
    async def atlas_error(request: Request, exc: AtlasError) -> Response:
        return not_found(request, str(exc))

    @app.exception_handler(UploadError)
    async def bad_upload(request: Request, exc: UploadError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(OverflowError)
    async def too_large(request: Request, exc: OverflowError) -> Response:
        # an id beyond SQLite's 64-bit integers names nothing in the atlas (found by tests/microscope/test_api_fuzz.py)
        return not_found(request, f"Not found: {request.url.path} (a number too large to be an id)")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return not_found(request, f"Not found: {request.url.path}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            detail = str(exc.detail) if exc.detail != "Not Found" else f"Not found: {request.url.path}"
            return not_found(request, detail)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    return app
