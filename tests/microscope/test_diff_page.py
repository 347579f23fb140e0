"""The microscope's diff page: a layer's newest diff against another network as JSON (as its schema says), its
page, the layer grid's link to it, and on a unit's page its match in the other network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

import filterscope as fs
from filterscope.atlas.stages.diff import DiffSettings
from filterscope.microscope import create_app

from ..helpers.atlases import write_images
from ..helpers.models import small_net
from ..helpers.openapi import Conformance

SPEC = f"{Path(__file__).parents[1] / 'helpers' / 'models.py'}:small_net"


@pytest.fixture(scope="module")
def diffed(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffed")
    write_images(root / "data", 12)
    torch.save(small_net(7).module.state_dict(), root / "other.pt")
    with fs.Atlas(root / "atlas") as atlas:
        atlas.build(small_net(), ["features.2", "features.4"], units={"features.4": [0, 1]}, recipes=(),
                    dataset=root / "data", exemplars=2,
                    stages=[DiffSettings(model=SPEC, weights=str(root / "other.pt"), images=12, concepts=16)])
    return root / "atlas"


def test_the_diff_answer_is_the_newest_report_with_unit_links(diffed):
    client = TestClient(create_app(diffed))
    answer = client.get("/api/m/smallnet/features.4/diff")
    Conformance(client)(answer)
    data = answer.json()
    assert data["layer"] == "features.4" and data["diffs"] == 1 and "other.pt" in data["model_b"]
    (match,) = data["matches"]
    first = match["matches"][0]
    assert len(match["matches"]) == 16 and first["url"] == f"/m/smallnet/features.4/{first['a']}"
    correlations = [m["correlation"] for m in match["matches"]]
    assert correlations == sorted(correlations, reverse=True)
    assert len(data["cka"]) == len(data["layers_a"]) and len(data["image_names"]) == 12
    assert len(data["concepts"]) == 1 and len(data["concepts"][0]["latents"]) == 16
    assert client.get("/m/smallnet/features.4/diff").status_code == 200


def test_the_layer_grid_links_the_diff_and_a_unit_shows_its_match(diffed):
    client = TestClient(create_app(diffed))
    assert client.get("/api/m/smallnet/features.4").json()["diff_page"] == "/m/smallnet/features.4/diff"
    unit = client.get("/api/m/smallnet/features.4/1")
    Conformance(client)(unit)
    same = unit.json()["same_unit"]
    match = next(m for m in client.get("/api/m/smallnet/features.4/diff").json()["matches"][0]["matches"]
                 if m["a"] == 1)
    assert (same["unit"], same["correlation"], same["layer"]) == (match["b"], match["correlation"], "features.4")
    assert same["diff_page"] == "/m/smallnet/features.4/diff"


def test_a_layer_without_a_diff_answers_404(diffed, tmp_path):
    write_images(tmp_path / "data", 12)
    with fs.Atlas(tmp_path / "plain") as atlas:
        atlas.build(small_net(), ["features.4"], units={"features.4": [0]}, recipes=(), dataset=tmp_path / "data",
                    exemplars=2)
    client = TestClient(create_app(tmp_path / "plain"))
    missing = client.get("/api/m/smallnet/features.4/diff")
    assert missing.status_code == 404 and "--diff-with" in missing.json()["detail"]
    assert client.get("/api/m/smallnet/features.4").json()["diff_page"] is None
    assert client.get("/api/m/smallnet/features.4/0").json()["same_unit"] is None
