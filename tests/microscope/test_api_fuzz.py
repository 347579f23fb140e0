"""The microscope's HTTP API fuzzed from its own OpenAPI schema (Hypothesis against ``/api/openapi.json``),
in process, on two small atlases (one with renders, exemplars and circuits; one with an activation atlas):
no response is a server error, every answer is one the schema declares for its operation (status, media
type, and for JSON the body validated by jsonschema against the declared schema), every link the answers
hold is followed and checked the same way, and odd methods, huge query strings and unknown content types get
clear 4xx answers."""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filterscope.microscope import create_app

from ..helpers.maps import SMALL, build
from ..helpers.openapi import conforms, templates

NAMES = st.one_of(st.sampled_from(["stack", "colorclasses", "4", "6", "conv2", "map", "..", "%2e%2e", "0"]),
                  st.text(min_size=1, max_size=40).filter(lambda s: "/" not in s and "?" not in s and "#" not in s))
NUMBERS = st.one_of(st.integers(-3, 12), st.integers(-2 ** 70, 2 ** 70), st.sampled_from(["x", "1.5", "", "-0"]))


@pytest.fixture(scope="module")
def map_atlas(tmp_path_factory, photo_folder):
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
    if response.request.url.path.startswith("/api/") and not 300 <= response.status_code < 400:
        data = response.json()
        if response.status_code >= 400:
            assert isinstance(data["detail"], str | list), data


def links(data: object) -> list[str]:
    """Every local URL in a JSON answer (not the file paths it names)."""
    if isinstance(data, dict):
        return [u for k, v in data.items() if k not in ("path", "dataset", "file", "array_file") for u in links(v)]
    if isinstance(data, list):
        return [u for v in data for u in links(v)]
    return [data] if isinstance(data, str) and data.startswith("/") and not data.startswith("//") else []


@pytest.mark.integration
@pytest.mark.parametrize("which", ["atlas", "map_atlas"])
def test_every_answer_and_every_link_conforms_to_the_schema(which, request):
    client = TestClient(create_app(request.getfixturevalue(which)))
    schema, known = client.get("/api/openapi.json").json(), templates(client)
    assert "422" not in str({p: o["responses"] for m in schema["paths"].values() for p, o in m.items()})
    seen, queue, kinds, visits = set(), ["/", "/api/models"], set(), {}
    while queue:
        url = queue.pop(0)
        if url in seen or url.startswith("/static/"):
            continue
        seen.add(url)
        template = next((t for t, pattern in known if pattern.match(urlsplit(url).path)), None)
        assert template is not None, f"{url} (linked from an answer) is no path of the schema"
        visits[template] = visits.get(template, 0) + 1
        if visits[template] > 30:  # enough of one kind: bounded, and every kind is reached
            continue
        response = client.get(url)
        if "get" not in schema["paths"][template]:  # a unit's render link: POST only
            assert response.status_code == 405 and response.json()["detail"] == "Method Not Allowed", url
            continue
        conforms(schema, known, "GET", response)
        kinds.add((template, response.status_code))
        if response.headers.get("content-type", "").startswith("application/json"):
            data = response.json()
            found = links(data)  # and a page's data: /api/ + the page's path, where the API has it
            if isinstance(data, dict) and isinstance(data.get("units"), list) and "url" in data:  # a layer's grid
                found += [f"{data['url']}/{u['unit']}" for u in data["units"]]
            queue.extend(found + [f"/api{u}" for u in found if u.startswith("/m/") and any(
                pattern.match(f"/api{urlsplit(u).path}") for _, pattern in known)])
    followed = {t for t, status in kinds if status == 200}
    pages = {"/", "/m/{model}/{layer}", "/m/{model}/{layer}/{unit}", "/m/{model}/{layer}/{unit}/exemplar/{exemplar}"}
    api = {"/api/models", "/api/m/{model}/{layer}", "/api/m/{model}/{layer}/{unit}"}
    images = {"/img/exemplar/{exemplar_id}", "/img/exemplar/{exemplar_id}/thumb", "/img/source/{exemplar_id}"}
    if which == "atlas":  # renders, exemplars, circuits
        expected = pages | api | images | {"/img/render/{render_id}", "/img/render/{render_id}/thumb"}
    else:  # exemplars and an activation atlas
        expected = pages | api | images | {"/m/{model}/{layer}/map", "/api/m/{model}/{layer}/map",
                                           "/img/map/{map_id}/{cell}", "/api/m/{model}/{layer}/map/cells/{cell}",
                                           "/img/patch/{map_id}/{sample}"}
    assert followed == expected and {status for _, status in kinds} == {200}


@pytest.mark.integration
@pytest.mark.parametrize("which", ["atlas", "map_atlas"])
def test_the_schema_fuzzed_gives_no_server_error(which, request):
    client = TestClient(create_app(request.getfixturevalue(which)), follow_redirects=False)
    schema, found, known = client.get("/api/openapi.json").json(), operations(client), templates(client)
    assert len(found) >= 12 and any("/map" in path for _, path, _ in found)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.sampled_from(found), st.data())
    def probe(operation, data):
        method, path, kinds = operation
        values = {name: data.draw(NUMBERS if kind == "integer" else NAMES) for name, kind in kinds.items()}
        url = re.sub(r"\{(\w+)\}", lambda m: quote(str(values[m.group(1)]), safe=""), path)
        body = data.draw(st.binary(max_size=64)) if method == "POST" else None
        response = client.request(method, url, content=body)
        check(response)
        conforms(schema, known, method, response)

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


@pytest.mark.integration
def test_the_routers_answer_alike_in_any_order(map_atlas, monkeypatch):
    """A unit's routes take only a number ({unit:int}), so a capability's router (the map's) need not come first."""
    from filterscope.microscope import server

    answers = []
    for order in (server.ROUTERS, server.ROUTERS[::-1]):
        monkeypatch.setattr(server, "ROUTERS", order)
        client = TestClient(create_app(map_atlas))
        cell = client.get("/api/m/colorclasses/conv2/map").json()["cells"][0]["cell"]
        urls = ("/m/colorclasses/conv2/map", "/api/m/colorclasses/conv2/map", "/m/colorclasses/conv2/0",
                "/api/m/colorclasses/conv2/0", f"/api/m/colorclasses/conv2/map/cells/{cell}")
        answers.append([(r.status_code, r.headers["content-type"].split(";")[0]) for r in map(client.get, urls)])
    assert answers[0] == answers[1] == [(200, "text/html"), (200, "application/json"), (200, "text/html"),
                                        (200, "application/json"), (200, "application/json")]
