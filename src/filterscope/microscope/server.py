"""The microscope's web application: pages, a JSON API and images, all from one atlas folder.

Pages (``/``, ``/m/MODEL/LAYER``, ``/m/MODEL/LAYER/UNIT``, ``.../exemplar/ID``) are small HTML shells that
the plain JavaScript in ``static/app.js`` fills from the JSON API under ``/api/``. Images are served only
by id, looked up in the atlas database (never by a path taken from the request), with an ``ETag`` and
``Cache-Control``. Anything unknown is a 404: an HTML page for pages, JSON under ``/api/``, ``/img/`` and
``/static/``.

Each request thread reads the atlas through its own read-only SQLite connection (WAL mode: reading never
blocks a build that writes). The server writes only through render jobs (``--render``).
"""

from __future__ import annotations

import functools
import hashlib
import io
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from PIL import Image
from starlette.exceptions import HTTPException

from .._version import __version__
from ..atlas.records import LayerRecord, ModelRecord
from ..atlas.store import AtlasStore
from ..errors import AtlasError, FilterscopeError
from .jobs import RenderJobs

__all__ = ["create_app", "THUMBNAIL_SIDE"]

HERE = Path(__file__).parent
THUMBNAIL_SIDE = 160
IMMUTABLE = "public, max-age=86400"


def create_app(atlas: str | Path, *, jobs: RenderJobs | None = None) -> FastAPI:
    """The microscope for the atlas in ``atlas`` (checked now: a missing or unreadable atlas raises
    :class:`~filterscope.errors.AtlasError`). With ``jobs``, pages can render missing units."""
    root = Path(atlas)
    AtlasStore(root, create=False, readonly=True).close()
    local = threading.local()

    def store() -> AtlasStore:
        if getattr(local, "store", None) is None:
            local.store = AtlasStore(root, create=False, readonly=True)
        return local.store

    app = FastAPI(title="filterscope microscope", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # ------------------------------------------------------------------------------------- errors
    def not_found(request: Request, detail: str) -> Response:
        if request.url.path.startswith(("/api/", "/img/", "/static/")):  # not pages: JSON
            return JSONResponse({"detail": detail}, status_code=404)
        return templates.TemplateResponse(request, "not_found.html", {"detail": detail, "atlas": str(root)},
                                          status_code=404)

    @app.exception_handler(AtlasError)
    async def atlas_error(request: Request, exc: AtlasError) -> Response:
        return not_found(request, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return not_found(request, f"Not found: {request.url.path}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return not_found(request, str(exc.detail) if exc.detail != "Not Found" else f"Not found: "
                                                                                      f"{request.url.path}")
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    # ------------------------------------------------------------------------------------- lookups
    def find(model: str, layer: str) -> tuple[ModelRecord, LayerRecord]:
        found = store().model(model)
        return found, store().layer(found, layer)

    def checked_unit(layer: LayerRecord, unit: int) -> None:
        if not 0 <= unit < layer.channels:
            raise AtlasError(f"Unit {unit} is out of range for layer {layer.name}, which has {layer.channels} units "
                             f"(0-{layer.channels - 1})")

    def base(model: str, layer: str) -> str:
        from urllib.parse import quote

        return f"/m/{quote(model, safe='')}/{quote(layer, safe='')}"

    # --------------------------------------------------------------------------------------- pages
    def page(request: Request, kind: str, title: str, **data: Any) -> Response:
        response = templates.TemplateResponse(request, "page.html", {"kind": kind, "title": title, "data": data,
                                                                     "atlas": str(root), "version": __version__})
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        return page(request, "home", f"atlas {root.name}")

    @app.get("/m/{model}/{layer}", response_class=HTMLResponse)
    def layer_page(request: Request, model: str, layer: str) -> Response:
        found, record = find(model, layer)
        return page(request, "layer", f"{found.name} {record.name}", model=found.name, layer=record.name)

    @app.get("/m/{model}/{layer}/{unit}", response_class=HTMLResponse)
    def unit_page(request: Request, model: str, layer: str, unit: int) -> Response:
        found, record = find(model, layer)
        checked_unit(record, unit)
        return page(request, "unit", f"{found.name} {record.name} unit {unit}", model=found.name, layer=record.name,
                    unit=unit)

    @app.get("/m/{model}/{layer}/{unit}/exemplar/{exemplar}", response_class=HTMLResponse)
    def exemplar_page(request: Request, model: str, layer: str, unit: int, exemplar: int) -> Response:
        found, record = find(model, layer)
        item, layer_id, owner = store().exemplar(exemplar)
        if layer_id != record.id or owner != unit:
            raise AtlasError(f"Exemplar {exemplar} is not one of unit {unit} of {record.name}")
        return page(request, "exemplar", f"{found.name} {record.name} unit {unit}: {Path(item.path).name}",
                    model=found.name, layer=record.name, unit=unit, exemplar=exemplar, path=Path(item.path).name,
                    kind_=item.kind, value=item.value, box=item.source_box, base=base(found.name, record.name))

    # ----------------------------------------------------------------------------------------- api
    # The API returns JSONResponse objects: the data is plain JSON already (the store keeps no NaN: SQLite
    # stores it as NULL), and FastAPI's checking of a returned dict costs more than the database work.
    @app.get("/api/models")
    def api_models() -> Response:
        out = []
        for model in store().models():
            layers = []
            for layer in store().layers(model.id):
                counts = store().render_counts(layer.id)
                found = store().latest_pass(layer.id)
                layers.append({"name": layer.name, "channels": layer.channels, "shape": layer.shape,
                               "rendered": counts.get("ok", 0) + counts.get("inactive", 0),
                               "failed": counts.get("failed", 0), "pending": counts.get("pending", 0),
                               "exemplar_images": found.images if found else 0,
                               "url": base(model.name, layer.name)})
            out.append({"name": model.name, "weights": model.weights, "weights_hash": model.weights_hash,
                        "layers": layers})
        return JSONResponse(out)

    @app.get("/api/m/{model}/{layer}")
    def api_layer(model: str, layer: str) -> Response:
        found, record = find(model, layer)
        units = store().layer_summary(record.id)
        for row in units:
            row["thumb"] = f"/img/render/{row['render']}/thumb" if row["render"] else None
            row["exemplar_thumb"] = f"/img/exemplar/{row['exemplar']}/thumb" if row["exemplar"] else None
        return JSONResponse({"model": found.name, "layer": record.name, "channels": record.channels,
                             "shape": record.shape, "url": base(found.name, record.name), "units": units,
                             "can_render": jobs is not None})

    @app.get("/api/m/{model}/{layer}/{unit}")
    def api_unit(model: str, layer: str, unit: int) -> Response:
        found, record = find(model, layer)
        checked_unit(record, unit)
        unit_record = store().unit(record.name, unit, found.name)
        data = unit_record.to_dict()
        url = base(found.name, record.name)
        for render in data["renders"]:
            render["image"] = f"/img/render/{render['id']}" if render["file"] else None
        field = record.receptive_field
        for items in data["exemplars"].values():
            for e in items:
                e["crop"] = f"/img/exemplar/{e['id']}" if e["has_crop"] else None
                e["thumb"] = f"/img/exemplar/{e['id']}/thumb" if e["has_crop"] else None
                e["source"] = f"/img/source/{e['id']}"
                e["page"] = f"{url}/{unit}/exemplar/{e['id']}"
                e["marker"] = _marker(field, e) if e["kind"] != "mean" else None
        data["cofiring"] = [{"unit": u, "correlation": c, "url": f"{url}/{u}"}
                            for u, c in store().cofiring(record.name, unit, 8, found.name)]
        data["prev"] = f"{url}/{unit - 1}" if unit > 0 else None
        data["next"] = f"{url}/{unit + 1}" if unit + 1 < record.channels else None
        data["layer_url"] = url
        data["can_render"] = jobs is not None
        active = jobs.active.get((record.name, unit)) if jobs is not None else None
        data["job"] = active.to_dict() if active is not None else None
        return JSONResponse(data)

    @app.post("/api/m/{model}/{layer}/{unit}/render", status_code=202)
    def api_render(model: str, layer: str, unit: int) -> Response:
        found, record = find(model, layer)
        checked_unit(record, unit)
        if jobs is None:
            return JSONResponse({"detail": "This microscope was started without --render: it never writes"},
                                status_code=403)
        if found.name != jobs.model.name:
            return JSONResponse({"detail": f"This microscope renders {jobs.model.name}, not {found.name}"},
                                status_code=409)
        if any(r.status in ("ok", "inactive") for r in store().renders(record.id, unit)):
            return JSONResponse({"detail": f"Unit {unit} of {record.name} is already rendered"}, status_code=409)
        return JSONResponse(jobs.submit(record.name, unit).to_dict(), status_code=202)

    @app.get("/api/jobs/{job_id}")
    def api_job(job_id: int) -> Response:
        job = jobs.get(job_id) if jobs is not None else None
        if job is None:
            raise AtlasError(f"No render job {job_id}")
        return JSONResponse(job.to_dict())

    # -------------------------------------------------------------------------------------- images
    def cached(request: Request, etag: str, body: bytes | None = None, path: Path | None = None,
               media_type: str = "image/png") -> Response:
        headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        if body is None:
            assert path is not None
            body = path.read_bytes()
        return Response(body, media_type=media_type, headers=headers)

    def render_file(render_id: int) -> Path:
        record = store().render(render_id)
        if not record.file:
            raise AtlasError(f"Render {render_id} has no image ({record.status})")
        path = root / record.file
        if not path.is_file():
            raise AtlasError(f"The image of render {render_id} is missing from the atlas folder")
        return path

    def file_tag(kind: str, ident: int, path: Path) -> str:
        stat = path.stat()
        return f'"{kind}{ident}-{stat.st_mtime_ns:x}-{stat.st_size:x}"'

    @app.get("/img/render/{render_id}")
    def render_image(request: Request, render_id: int) -> Response:
        path = render_file(render_id)
        return cached(request, file_tag("r", render_id, path), path=path)

    @app.get("/img/render/{render_id}/thumb")
    def render_thumb(request: Request, render_id: int) -> Response:
        path = render_file(render_id)
        tag = file_tag("t", render_id, path)
        return cached(request, tag, body=_thumbnail(str(path), tag), media_type="image/jpeg")

    @app.get("/img/exemplar/{exemplar_id}")
    def exemplar_crop(request: Request, exemplar_id: int) -> Response:
        body = store().exemplar_image(exemplar_id)
        return cached(request, f'"e{exemplar_id}-{hashlib.sha1(body).hexdigest()[:12]}"', body=body,
                      media_type="image/jpeg")

    @app.get("/img/exemplar/{exemplar_id}/thumb")
    def exemplar_thumb(request: Request, exemplar_id: int) -> Response:
        body = store().exemplar_image(exemplar_id, thumbnail=True)
        return cached(request, f'"et{exemplar_id}-{hashlib.sha1(body).hexdigest()[:12]}"', body=body,
                      media_type="image/jpeg")

    @app.get("/img/source/{exemplar_id}")
    def exemplar_source(request: Request, exemplar_id: int) -> Response:
        item, _, _ = store().exemplar(exemplar_id)
        path = Path(item.path)  # from the database, never from the request
        if not path.is_file():
            raise AtlasError(f"The dataset image of exemplar {exemplar_id} is no longer at {path}")
        media = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
                 ".bmp": "image/bmp"}.get(path.suffix.lower())
        if media is None:  # TIFF, .npy: converted for the browser
            try:
                body = _as_png(str(path))
            except (FilterscopeError, OSError, ValueError) as exc:
                raise AtlasError(f"The dataset image of exemplar {exemplar_id} cannot be shown: {exc}") from None
            return cached(request, file_tag("s", exemplar_id, path), body=body)
        return cached(request, file_tag("s", exemplar_id, path), path=path, media_type=media)

    return app


def _marker(field: dict[str, Any] | None, exemplar: dict[str, Any]) -> list[float] | None:
    """Where the maximum's position lies in the crop, as fractions ``[x, y]`` of its width and height."""
    if not field:
        return None
    x0, y0, x1, y1 = exemplar["box"]
    if field.get("whole"):
        cx, cy = (exemplar["x"] + 0.5) * field["stride_x"], (exemplar["y"] + 0.5) * field["stride_y"]
    else:
        cx = field["offset_x"] + exemplar["x"] * field["stride_x"] + field["width"] / 2
        cy = field["offset_y"] + exemplar["y"] * field["stride_y"] + field["height"] / 2
    if x1 <= x0 or y1 <= y0:
        return None
    return [min(max((cx - x0) / (x1 - x0), 0.0), 1.0), min(max((cy - y0) / (y1 - y0), 0.0), 1.0)]


@functools.lru_cache(maxsize=4096)
def _thumbnail(path: str, tag: str) -> bytes:
    """A JPEG of at most :data:`THUMBNAIL_SIDE` px (cached per file version: ``tag`` has its mtime)."""
    with Image.open(path) as source:
        image = source.convert("RGB")
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


def _as_png(path: str) -> bytes:
    import torch

    from ..images import load_array, load_image
    from ..tensors import to_pil

    image = (to_pil(torch.from_numpy(load_array(path)).clamp(0, 1)) if path.lower().endswith(".npy")
             else load_image(path))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
