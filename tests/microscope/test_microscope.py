"""The microscope: its JSON API and images through FastAPI's test client (caching, 404s, no path
traversal, render on demand, never writing without it), and the command's checks."""

import hashlib
import io
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import filterscope as fs
from filterscope.cli import app as cli
from filterscope.microscope import RenderJobs, create_app

from ..helpers.atlases import ATLAS_CLI, TINY_RECIPE, conv_stack
from ..helpers.images import jpeg_bytes, png_header
from ..helpers.openapi import Conformance

runner = CliRunner()


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(("-shm", "-wal"))}


def test_models_layers_and_units_come_from_the_atlas(atlas):
    client = TestClient(create_app(atlas))
    models = client.get("/api/models").json()
    assert [m["name"] for m in models] == ["stack"]
    layers = {layer["name"]: layer for layer in models[0]["layers"]}
    assert (layers["4"]["channels"], layers["4"]["rendered"], layers["4"]["exemplar_images"]) == (5, 3, 8)
    layer = client.get("/api/m/stack/4").json()
    assert [u["unit"] for u in layer["units"]] == [0, 1, 2, 3, 4]
    assert [u["thumb"] is not None for u in layer["units"]] == [True, True, True, False, False]
    # the top exemplar's thumbnail for the units whose crops were cut (the wanted ones)
    assert [u["exemplar_thumb"] is not None for u in layer["units"]] == [True, True, True, False, False]
    assert client.get(layer["units"][0]["exemplar_thumb"]).headers["content-type"] == "image/jpeg"
    assert all(u["max"] is not None and 0 <= u["fraction_positive"] <= 1 for u in layer["units"])
    unit = client.get("/api/m/stack/4/1").json()
    record = fs.Atlas(atlas, create=False).unit("4", 1)
    assert unit["renders"][0]["final_activation"] == pytest.approx(record.renders[0].final_activation)
    assert [e["image"] for e in unit["exemplars"]["max"]] == [e.image for e in record.exemplars["max"]]
    assert unit["prev"] == "/m/stack/4/0" and unit["next"] == "/m/stack/4/2" and unit["layer_url"] == "/m/stack/4"
    assert all(0 <= v <= 1 for e in unit["exemplars"]["max"] for v in e["marker"])
    assert len(unit["cofiring"]) == 4 and unit["can_render"] is False
    assert client.get("/api/m/stack/4/4").json()["next"] is None


def test_unit_pages_carry_their_circuit(atlas):
    client = TestClient(create_app(atlas))
    weights = client.get("/api/m/stack/6/0").json()["weights"]
    inputs = weights["inputs"]
    assert inputs["source"] == "4" and inputs["kernel_size"] == [5, 5] and inputs["exemplars"] == 3
    net = conv_stack().module
    # 4 -> 5 (ReLU) -> 6, a 3x3 kernel of dilation 2: its weights spread over 5x5
    totals = net[6].weight.detach()[0].sum(dim=(1, 2))
    rows = inputs["inputs"]["excite"] + inputs["inputs"]["inhibit"]
    assert sorted(r["unit"] for r in rows) == list(range(5))
    assert rows[0]["kernel"][1][1] == 0 and rows[0]["kernel"][0][0] != 0  # the dilation's holes
    assert all(r["weight"] == pytest.approx(float(totals[r["unit"]]), rel=1e-3, abs=1e-4) for r in rows)
    assert {r["url"] for r in rows} == {f"/m/stack/4/{u}" for u in range(5)}
    assert [r["thumb"] is not None for r in sorted(rows, key=lambda r: r["unit"])] == [True] * 3 + [False] * 2
    check = inputs["ablation"]
    assert set(check["ratios"]) == {"expanded", "attribution"} and len(check["random_drops"]) == 3
    assert check["k"] == max(len(v) for v in check["ablated"].values()) <= 5  # the positive inputs, at most 5
    assert weights["classes"] is None  # the stack's output is a map, not class logits
    outputs = client.get("/api/m/stack/4/1").json()["weights"]["outputs"]
    assert outputs["layer"] == "6" and sorted(r["unit"] for r in outputs["excite"] + outputs["inhibit"]) == [0, 1, 2, 3]
    assert client.get("/api/m/stack/4/4").json()["weights"] is None  # not a wanted unit: no circuit


def test_images_are_served_by_id_with_etags(atlas):
    client = TestClient(create_app(atlas))
    unit = client.get("/api/m/stack/4/1").json()
    render = client.get(unit["renders"][0]["image"])
    assert render.status_code == 200 and render.headers["content-type"] == "image/png"
    assert render.content == (atlas / unit["renders"][0]["file"]).read_bytes()
    assert "max-age" in render.headers["cache-control"]
    again = client.get(unit["renders"][0]["image"], headers={"If-None-Match": render.headers["etag"]})
    assert again.status_code == 304 and not again.content
    thumb = client.get(f"/img/render/{unit['renders'][0]['id']}/thumb")
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 160
    best = unit["exemplars"]["max"][0]
    crop = client.get(best["crop"])
    assert crop.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(crop.content)).size == (
        best["box"][2] - best["box"][0], best["box"][3] - best["box"][1])
    assert client.get(best["crop"], headers={"If-None-Match": crop.headers["etag"]}).status_code == 304
    source = client.get(best["source"])
    assert source.status_code == 200 and source.content == Path(best["path"]).read_bytes()
    page = client.get(best["page"])
    assert page.status_code == 200 and "exemplar" in page.text


@pytest.mark.parametrize("path", [
    "/api/m/nomodel/4", "/api/m/stack/nolayer", "/api/m/stack/4/5", "/api/m/stack/4/-1", "/api/m/stack/4/x",
    "/api/jobs/1", "/api/nothing", "/img/render/999", "/img/exemplar/999", "/img/source/999",
])
def test_unknown_things_are_json_404s(atlas, path):
    response = TestClient(create_app(atlas)).get(path)
    assert response.status_code == 404 and response.headers["content-type"] == "application/json"
    assert response.json()["detail"]


@pytest.mark.parametrize("path", ["/m/nomodel/4", "/m/stack/nolayer", "/m/stack/4/99", "/m/stack/4/abc",
                                  "/m/stack/4/1/exemplar/999999", "/nothing/here"])
def test_unknown_pages_are_html_404s(atlas, path):
    response = TestClient(create_app(atlas), raise_server_exceptions=True).get(path)
    assert response.status_code == 404 and response.headers["content-type"].startswith("text/html")
    assert "Not found" in response.text


@pytest.mark.parametrize("path", [
    "/img/../../etc/passwd", "/img/..%2F..%2Fetc%2Fpasswd", "/img/%2e%2e/%2e%2e/etc/passwd",
    "/img/render/..%2F..%2F..%2Fetc%2Fpasswd", "/img/source/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/img/render/1/..%2F..%2F..%2Fatlas.sqlite", "/m/stack/4/1/exemplar/..%2F..%2Fatlas.sqlite",
])
def test_no_path_traversal(atlas, path):
    response = TestClient(create_app(atlas)).get(path)
    assert response.status_code == 404
    assert "root:" not in response.text and "SQLite format" not in response.text


def test_pages_and_static_files(atlas):
    client = TestClient(create_app(atlas))
    for path in ("/", "/m/stack/4", "/m/stack/4/1"):
        response = client.get(path)
        assert response.status_code == 200 and '<script src="/static/app.js">' in response.text
    assert "function sortUnits" in client.get("/static/app.js").text
    assert client.get("/static/style.css").status_code == 200


def test_without_render_the_server_never_writes(atlas):
    before = digest(atlas)
    client = TestClient(create_app(atlas))
    for path in ("/", "/api/models", "/api/m/stack/4", "/api/m/stack/4/1", "/m/stack/4/3", "/api/m/stack/6/0"):
        client.get(path)
    refused = client.post("/api/m/stack/4/3/render")
    assert refused.status_code == 403 and "without --render" in refused.json()["detail"]
    assert digest(atlas) == before


def test_render_on_demand_one_job_per_unit(tmp_path, atlas):
    import shutil

    folder = tmp_path / "atlas"
    shutil.copytree(atlas, folder)
    jobs = RenderJobs(folder, conv_stack(), TINY_RECIPE, 0)
    client = TestClient(create_app(folder, jobs=jobs))
    check = Conformance(client)
    assert client.post("/api/m/stack/4/9/render").status_code == 404
    assert client.post("/api/m/stack/nolayer/1/render").status_code == 404
    conflict = client.post("/api/m/stack/4/1/render")
    assert conflict.status_code == 409  # already rendered
    first = client.post("/api/m/stack/4/3/render")
    second = client.post("/api/m/stack/4/3/render")
    assert first.status_code == second.status_code == 202
    check(conflict, first, second, client.get(f"/api/jobs/{first.json()['id']}"), client.get("/api/jobs/999"))
    assert first.json()["id"] == second.json()["id"]  # one job per unit
    deadline = time.monotonic() + 60
    state = first.json()
    while state["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.1)
        state = client.get(f"/api/jobs/{state['id']}").json()
    assert state["state"] == "done", state
    unit = client.get("/api/m/stack/4/3").json()
    assert unit["renders"][0]["status"] == "ok" and client.get(unit["renders"][0]["image"]).status_code == 200
    assert fs.Atlas(folder, create=False).unit("4", 3).renders[0].recipe.steps == TINY_RECIPE.steps


def _wait_for(client: TestClient, job: dict, states: tuple[str, ...] = ("done", "failed")) -> dict:
    deadline = time.monotonic() + 60
    while job["state"] not in states and time.monotonic() < deadline:
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['id']}").json()
    return job


@pytest.mark.integration
def test_many_render_requests_stay_bounded_and_the_server_keeps_serving(tmp_path, atlas, monkeypatch):
    """A flood of POSTs for many units: at most MAX_WAITING wait, the rest are 429s with Retry-After; pages are
    served meanwhile; once the queue drains it takes jobs again; finished jobs beyond MAX_KEPT are forgotten."""
    import shutil
    import threading

    import filterscope.microscope.jobs as jobs_module

    folder = tmp_path / "atlas"
    shutil.copytree(atlas, folder)
    gate, real = threading.Event(), jobs_module.build_atlas
    monkeypatch.setattr(jobs_module, "build_atlas", lambda *a, **k: (gate.wait(60), real(*a, **k))[1])
    monkeypatch.setattr(jobs_module, "MAX_WAITING", 2)
    monkeypatch.setattr(jobs_module, "MAX_KEPT", 2)
    client = TestClient(create_app(folder, jobs=RenderJobs(folder, conv_stack(), TINY_RECIPE, 0)))
    running = _wait_for(client, client.post("/api/m/stack/4/3/render").json(), ("running",))
    answers = [client.post(f"/api/m/stack/{layer}/{unit}/render") for layer, unit in
               [("4", 4), ("6", 1), ("6", 2), ("6", 3), ("4", 4)]]
    assert [a.status_code for a in answers] == [202, 202, 429, 429, 202]  # the last one asks for a waiting job
    Conformance(client)(*answers)
    assert "2 render jobs are waiting (at most 2)" in answers[2].json()["detail"]
    assert answers[2].headers["retry-after"] == "10"
    assert client.get("/api/m/stack/4").status_code == 200 and client.get("/m/stack/4/0").status_code == 200
    gate.set()
    finished = [_wait_for(client, job) for job in (running, answers[0].json(), answers[1].json())]
    assert [job["state"] for job in finished] == ["done", "done", "done"]
    later = client.post("/api/m/stack/6/2/render")
    assert later.status_code == 202 and _wait_for(client, later.json())["state"] == "done"
    assert client.get(f"/api/jobs/{running['id']}").status_code == 404  # forgotten: only the last 2 are kept
    assert client.get(f"/api/jobs/{later.json()['id']}").status_code == 200


def test_a_job_for_a_layer_the_model_no_longer_has_fails_clearly(tmp_path, atlas):
    import shutil

    folder = tmp_path / "atlas"
    shutil.copytree(atlas, folder)
    shorter = conv_stack()
    shorter = fs.wrap_model(shorter.module[:5], name="stack", preprocessing=shorter.preprocessing)  # no layer 6
    client = TestClient(create_app(folder, jobs=RenderJobs(folder, shorter, TINY_RECIPE, 0)))
    gone = _wait_for(client, client.post("/api/m/stack/6/1/render").json())
    assert gone["state"] == "failed" and gone["message"].startswith("Unknown layer '6' in stack")
    Conformance(client)(client.get(f"/api/jobs/{gone['id']}"))
    assert _wait_for(client, client.post("/api/m/stack/4/3/render").json())["state"] == "done"  # it goes on
    assert client.get("/api/m/stack/4/3").json()["renders"][0]["status"] == "ok"


def test_serve_command_checks_before_listening(tmp_path, atlas):
    result = runner.invoke(cli, ["serve", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "No atlas in" in result.output
    result = runner.invoke(cli, ["serve", str(atlas), "--port", "70000"])
    assert result.exit_code == 1 and "--port must be 1-65535" in result.output


@pytest.mark.integration
def test_render_settings_use_the_atlas_model_weights_and_most_used_recipe(tmp_path):
    from filterscope.cli.serve import render_settings
    from filterscope.errors import AtlasError


    out = tmp_path / "atlas"
    assert runner.invoke(cli, ["atlas", "build", str(out), *ATLAS_CLI, "--units", "0-1"]).exit_code == 0
    assert runner.invoke(cli, ["atlas", "build", str(out), *ATLAS_CLI, "--units", "2", "--steps", "1"]).exit_code == 0
    loaded, recipe = render_settings(out, None, None, None, 0, "cpu", None)
    assert loaded.name == "resnet18" and loaded.weights == fs.zoo.WeightsSource.random(0, 110)  # the recorded weights
    assert (recipe.size, recipe.scales, recipe.steps) == (32, 2, 3)  # the recipe of 2 renders, not of 1
    assert render_settings(out, None, None, None, 0, "cpu", "lucid")[1].name == "lucid"
    with pytest.raises(AtlasError, match="was built with other weights"):
        render_settings(out, None, "random", None, 5, "cpu", None)  # random weights of another seed


def test_pages_hand_the_script_urls_from_the_one_builder(atlas):
    import json
    import re

    from filterscope.microscope.urls import Urls

    urls = Urls()
    assert urls.unit("m/x", "features.3", 2) == "/m/m%2Fx/features.3/2"  # a name with / stays one segment
    assert urls.api_render("m", "a b", 1) == "/api/m/m/a%20b/1/render"
    client = TestClient(create_app(atlas))
    html = client.get(urls.unit("stack", "4", 1)).text
    data = json.loads(re.search(r'data-page="([^"]*)"', html).group(1).replace("&#34;", '"').replace("&quot;", '"'))
    assert data["api"] == urls.api_unit("stack", "4", 1) and data["home"] == "/"
    unit = client.get(data["api"]).json()
    assert unit["render_url"] == urls.api_render("stack", "4", 1) and unit["layer_url"] == urls.layer("stack", "4")
    assert client.post(unit["render_url"]).status_code == 403  # served without --render: it never writes


# ------------------------------------------------------------------------------------- the image page


def test_the_image_page_explains_an_upload_and_refuses_hostile_ones(atlas):
    from filterscope.microscope.explain import Explainer

    model = conv_stack()
    client = TestClient(create_app(atlas, explainer=Explainer(model, groups=2)))
    assert client.get("/api/m/stack/4").json()["image_page"] == "/m/stack/4/image"
    assert "image" in client.get("/m/stack/4/image").text
    response = client.post("/api/m/stack/4/explain", content=jpeg_bytes())
    assert response.status_code == 200, response.text
    data = response.json()
    import io

    from PIL import Image
    expected = fs.semantic_dictionary(model, Image.open(io.BytesIO(jpeg_bytes())).convert("RGB"), "4", k=4)
    assert data["units"] == expected.units.tolist() and data["grid"] == list(expected.units.shape[:2])
    assert data["attribution"] is None and len(data["groups"]["spatial"]) == 2  # the stack has no class logits
    groups = fs.neuron_groups(model, Image.open(io.BytesIO(jpeg_bytes())).convert("RGB"), "4", n=2)
    assert data["groups"]["units"] == groups.channels.topk(4, dim=1).indices.tolist()  # each group's strongest units
    assert all(str(u) in data["links"] for row in data["groups"]["units"] for u in row)
    assert data["links"]["0"]["url"] == "/m/stack/4/0" and data["links"]["0"]["thumb"] is not None
    check = Conformance(client)
    check(response)
    hostile = ((b"", 400, "empty"), (b"hello, not an image", 422, "not an image"),
               (png_header(40_000, 40_000), 413, "too many pixels"), (jpeg_bytes()[:300], 422, "cannot be decoded"))
    for body, status, words in hostile:
        response = client.post("/api/m/stack/4/explain", content=body)
        assert response.status_code == status and words in response.json()["detail"], (status, response.text)
        check(response)
    from filterscope.microscope.explain import MAX_BYTES

    too_big = client.post("/api/m/stack/4/explain", content=b"\0" * (MAX_BYTES + 1))
    assert too_big.status_code == 413 and "limit" in too_big.json()["detail"]
    check(too_big)
    assert client.get("/api/models").status_code == 200  # still serving
    plain = TestClient(create_app(atlas))
    refused = plain.post("/api/m/stack/4/explain", content=jpeg_bytes())
    assert refused.status_code == 403
    check(refused)
    assert plain.get("/api/m/stack/4").json()["image_page"] is None


def test_a_damaged_or_missing_render_file_is_a_404_and_the_unit_page_still_shows(atlas, tmp_path):
    import shutil

    copy = tmp_path / "atlas"
    shutil.copytree(atlas, copy)
    client = TestClient(create_app(copy))
    renders = client.get("/api/m/stack/4/1").json()["renders"] + client.get("/api/m/stack/4/2").json()["renders"]
    truncated, missing = (copy / renders[0]["file"]), (copy / renders[1]["file"])
    truncated.write_bytes(truncated.read_bytes()[:40])
    missing.unlink()
    for render in renders[:2]:
        thumb = client.get(f"/img/render/{render['id']}/thumb")
        assert thumb.status_code == 404 and thumb.json()["detail"].startswith(f"The image of render {render['id']}")
    assert client.get(f"/img/render/{renders[1]['id']}").status_code == 404
    assert client.get("/m/stack/4/1").status_code == 200 and client.get("/api/m/stack/4/2").status_code == 200
