"""Images by id under ``/img/``: renders (and their thumbnails), exemplar crops and thumbnails, and the
dataset image an exemplar came from. Every file is looked up in the atlas database, never taken from a
path in the request; each answer has an ``ETag`` and a ``Cache-Control``."""

from __future__ import annotations

import functools
import hashlib
import io
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from PIL import Image

from ..errors import AtlasError, FilterscopeError
from .context import Microscope, microscope
from .schemas import file_responses

__all__ = ["router", "RENDER_THUMBNAIL_SIDE"]

router = APIRouter(prefix="/img")
Scope = Annotated[Microscope, Depends(microscope)]

RENDER_THUMBNAIL_SIDE = 160
"""Render thumbnails (made on request, for the layer grid) fit in this many pixels."""
IMMUTABLE = "public, max-age=86400"
MEDIA = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".bmp": "image/bmp"}


def cached(request: Request, etag: str, body: bytes | None = None, path: Path | None = None,
           media_type: str = "image/png") -> Response:
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if body is None:
        assert path is not None
        body = path.read_bytes()
    return Response(body, media_type=media_type, headers=headers)


def _render_file(scope: Microscope, render_id: int) -> Path:
    record = scope.store().render(render_id)
    if not record.file:
        raise AtlasError(f"Render {render_id} has no image ({record.status})")
    path = scope.root / record.file
    if not path.is_file():
        raise AtlasError(f"The image of render {render_id} is missing from the atlas folder")
    recorded = scope.store().recorded_file(record.file)
    if recorded is not None and not _matches(str(path), _file_tag("f", render_id, path), recorded):
        raise AtlasError(f"The image of render {render_id} is damaged (not the file the atlas wrote): "
                         "filterscope atlas check --repair marks it for the next build")
    return path


@functools.lru_cache(maxsize=4096)
def _matches(path: str, tag: str, recorded: tuple[int, str]) -> bool:
    """Whether the file has its recorded size and hash (cached per file version: ``tag`` has its mtime and size)."""
    from ..atlas.writes import file_digest

    return file_digest(Path(path)) == recorded


def _file_tag(kind: str, ident: int, path: Path) -> str:
    stat = path.stat()
    return f'"{kind}{ident}-{stat.st_mtime_ns:x}-{stat.st_size:x}"'


@router.get("/render/{render_id}", response_class=Response, responses=file_responses("image/png"))
def render_image(request: Request, scope: Scope, render_id: int) -> Response:
    path = _render_file(scope, render_id)
    return cached(request, _file_tag("r", render_id, path), path=path)


@router.get("/render/{render_id}/thumb", response_class=Response, responses=file_responses("image/jpeg"))
def render_thumb(request: Request, scope: Scope, render_id: int) -> Response:
    path = _render_file(scope, render_id)
    tag = _file_tag("t", render_id, path)
    try:
        body = _thumbnail(str(path), tag)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # truncated, replaced, not an image
        raise AtlasError(f"The image of render {render_id} is damaged ({exc}); build the atlas again after "
                         "removing it") from None
    return cached(request, tag, body=body, media_type="image/jpeg")


@router.get("/exemplar/{exemplar_id}", response_class=Response, responses=file_responses("image/jpeg"))
def exemplar_crop(request: Request, scope: Scope, exemplar_id: int) -> Response:
    body = scope.store().exemplar_image(exemplar_id)
    return cached(request, f'"e{exemplar_id}-{hashlib.sha1(body).hexdigest()[:12]}"', body=body,
                  media_type="image/jpeg")


@router.get("/exemplar/{exemplar_id}/thumb", response_class=Response, responses=file_responses("image/jpeg"))
def exemplar_thumb(request: Request, scope: Scope, exemplar_id: int) -> Response:
    body = scope.store().exemplar_image(exemplar_id, thumbnail=True)
    return cached(request, f'"et{exemplar_id}-{hashlib.sha1(body).hexdigest()[:12]}"', body=body,
                  media_type="image/jpeg")


@router.get("/source/{exemplar_id}", response_class=Response, responses=file_responses("image/*"))
def exemplar_source(request: Request, scope: Scope, exemplar_id: int) -> Response:
    item, _, _ = scope.store().exemplar(exemplar_id)
    path = Path(item.path)  # from the database, never from the request
    if not path.is_file():
        raise AtlasError(f"The dataset image of exemplar {exemplar_id} is no longer at {path}")
    media = MEDIA.get(path.suffix.lower())
    if media is None:  # TIFF, .npy: converted for the browser
        try:
            body = _as_png(str(path))
        except (FilterscopeError, OSError, ValueError) as exc:
            raise AtlasError(f"The dataset image of exemplar {exemplar_id} cannot be shown: {exc}") from None
        return cached(request, _file_tag("s", exemplar_id, path), body=body)
    return cached(request, _file_tag("s", exemplar_id, path), path=path, media_type=media)


@functools.lru_cache(maxsize=4096)
def _thumbnail(path: str, tag: str) -> bytes:
    """A JPEG of at most :data:`RENDER_THUMBNAIL_SIDE` px (cached per file version: ``tag`` has its mtime)."""
    with Image.open(path) as source:
        image = source.convert("RGB")
    image.thumbnail((RENDER_THUMBNAIL_SIDE, RENDER_THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
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
