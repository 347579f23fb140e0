"""Whether an answer of the microscope is one its OpenAPI schema declares (tests/microscope/test_api_fuzz.py, and the
render-job and image-page tests of tests/microscope/test_microscope.py)."""

from __future__ import annotations

import re
from fnmatch import fnmatch
from urllib.parse import unquote, urlsplit

from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator


def conforms(schema: dict, known: list[tuple[str, re.Pattern[str]]], method: str, response) -> None:
    """``response`` is an answer the schema declares for the operation of the path it answers (the client
    resolves ``..`` segments: a drawn ``..`` may ask another path): its status, its media type and, for JSON,
    a body valid against the declared schema. A path with a trailing slash is redirected (307) to the path
    without it (Starlette's rule for every path, no operation's answer)."""
    path = response.request.url.path
    if response.status_code == 307:
        assert unquote(urlsplit(response.headers["location"]).path) == unquote(path).rstrip("/") and path.endswith("/")
        return
    template = next((t for t, pattern in known if pattern.match(path)), None)
    if template is None or method.lower() not in schema["paths"][template]:
        return  # no operation: the catch-all 404 (or 405), which check() covers
    declared = schema["paths"][template][method.lower()]["responses"]
    where = f"{method} {response.request.url.path} ({template}): {response.status_code}"
    answer = declared.get(str(response.status_code)) or declared.get("default")
    assert answer is not None, f"{where} is not declared (declared: {sorted(declared)})"
    content = answer.get("content")
    if response.status_code == 304 or not content:
        assert response.status_code == 304 or not response.content, f"{where} has a body the schema does not declare"
        return
    media = response.headers.get("content-type", "").split(";")[0].strip()
    matched = next((m for m in content if fnmatch(media, m)), None)
    assert matched is not None, f"{where} answers {media!r}, the schema declares {sorted(content)}"
    body = content[matched].get("schema")
    if media == "application/json" and body:
        errors = list(Draft202012Validator({**body, "components": schema["components"]}).iter_errors(response.json()))
        assert not errors, f"{where}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def templates(client: TestClient) -> list[tuple[str, re.Pattern[str]]]:
    """The schema's paths, as the app tries them (in its routes' order), each with a pattern matching it."""
    paths = client.get("/api/openapi.json").json()["paths"]
    ordered = {r.path_format: r.path for r in client.app.routes if getattr(r, "path_format", None) in paths}

    def pattern(path: str) -> re.Pattern[str]:  # {name:int} takes digits only, as the app's convertor does
        escaped = re.sub(r"\\{\w+:int\\}", "[0-9]+", re.escape(path))
        return re.compile("^" + re.sub(r"\\{\w+\\}", "[^/]+", escaped) + "$")

    return [(template, pattern(path)) for template, path in ordered.items()]




class Conformance:
    """``check(response)``: :func:`conforms` against ``client``'s app's schema."""

    def __init__(self, client: TestClient) -> None:
        self.schema, self.known = client.get("/api/openapi.json").json(), templates(client)

    def __call__(self, *responses) -> None:
        for response in responses:
            conforms(self.schema, self.known, response.request.method, response)
