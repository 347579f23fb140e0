"""The microscope's HTTP API fuzzed from its own OpenAPI schema (Hypothesis against ``/api/openapi.json``),
in process, on two small atlases (one with renders, exemplars and circuits; one with an activation atlas):
no response is a server error, every ``/api/`` answer is JSON (errors: ``{"detail": str}``), and odd methods,
huge query strings and unknown content types get clear 4xx answers."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filterscope.microscope import create_app

from .test_maps import (
    SMALL,
    build,
    photo_folder,  # noqa: F401  (the fixture)
)
from .test_microscope import atlas  # noqa: F401  (the fixture)

NAMES = st.one_of(st.sampled_from(["stack", "colorclasses", "4", "6", "conv2", "map", "..", "%2e%2e", "0"]),
                  st.text(min_size=1, max_size=40).filter(lambda s: "/" not in s and "?" not in s and "#" not in s))
NUMBERS = st.one_of(st.integers(-3, 12), st.integers(-2 ** 70, 2 ** 70), st.sampled_from(["x", "1.5", "", "-0"]))


@pytest.fixture(scope="module")
def map_atlas(tmp_path_factory, photo_folder):  # noqa: F811
    folder = tmp_path_factory.mktemp("fuzz") / "m"
    build(folder, photo_folder, SMALL)
    return folder


def operations(client: TestClient) -> list[tuple[str, str, dict[str, str]]]:
    """``(method, path template, {parameter: kind})`` of every operation the schema declares."""
    schema = client.get("/api/openapi.json").json()
    found = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            kinds = {p["name"]: p.get("schema", {}).get("type", "string") for p in operation.get("parameters", [])
                     if p["in"] == "path"}
            found.append((method.upper(), path, kinds))
    return found


def check(response) -> None:
    assert response.status_code < 500, (response.request.url, response.status_code, response.text[:300])
    if response.request.url.path.startswith("/api/"):
        data = response.json()
        if response.status_code >= 400:
            assert isinstance(data["detail"], str | list), data


@pytest.mark.parametrize("which", ["atlas", "map_atlas"])
def test_the_schema_fuzzed_gives_no_server_error(which, request):
    client = TestClient(create_app(request.getfixturevalue(which)))
    found = operations(client)
    assert len(found) >= 12 and any("/map" in path for _, path, _ in found)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.sampled_from(found), st.data())
    def probe(operation, data):
        method, path, kinds = operation
        values = {name: data.draw(NUMBERS if kind == "integer" else NAMES) for name, kind in kinds.items()}
        url = re.sub(r"\{(\w+)\}", lambda m: quote(str(values[m.group(1)]), safe=""), path)
        body = data.draw(st.binary(max_size=64)) if method == "POST" else None
        check(client.request(method, url, content=body))

    probe()


def test_odd_methods_huge_queries_and_unknown_content_types_are_4xx(map_atlas):
    client = TestClient(create_app(map_atlas))
    for method in ("DELETE", "PUT", "PATCH"):
        response = client.request(method, "/api/m/colorclasses/conv2/map")
        assert response.status_code == 405, (method, response.status_code)
    huge = client.get("/api/m/colorclasses/conv2/map?" + "x=" + "a" * 20000)
    assert huge.status_code == 200  # unknown query parameters are ignored, whatever their size
    upload = client.post("/api/m/colorclasses/conv2/explain", content=b"\x00" * 100,
                         headers={"content-type": "application/x-unknown"})
    assert upload.status_code == 403 and "holds no model" in upload.json()["detail"]
    assert client.get("/api/m/colorclasses/conv2/map/cells/-1").status_code == 404
    assert client.get("/img/patch/1/999999999999").status_code == 404
    assert client.get("/img/map/1/99999").status_code == 404
