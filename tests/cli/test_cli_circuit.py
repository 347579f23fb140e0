"""``filterscope circuit`` and the circuits of ``atlas build``, from the command line."""

import json

import pytest
import torch
from typer.testing import CliRunner

import filterscope as fs
from filterscope.cli import app

from ..helpers.atlases import TINY_RECIPE, write_images

runner = CliRunner()
DIGITS = "examples/digits.py:digits"
FAST = ["--exemplars", "4", "--draws", "2", "-q"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.integration
def test_circuit_prints_both_views_and_writes_json_and_a_figure(tmp_path):
    images = write_images(tmp_path / "images", 6, size=28)
    given = [x for path in images for x in ("--images", path)]
    result = run("circuit", DIGITS, "-l", "relu3", "-u", 3, "--from", "relu2", "-k", 4, *given,
                 "--json", tmp_path / "c.json", "-o", tmp_path / "out", *FAST)
    assert result.exit_code == 0, result.output
    assert "digits relu3 unit 3 from relu2: expanded weights 3x3" in result.output
    assert "causal check (top" in result.output and "x random" in result.output
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["exemplars"] == min(4, len(images))
    for row in data["inputs"]["excite"]:
        assert {"unit", "weight", "kernel", "attribution"} <= set(row) and len(row["kernel"]) == 3
        assert row["weight"] == pytest.approx(sum(map(sum, row["kernel"])), rel=1e-3, abs=1e-3)
    # relu2 -> conv3 -> relu3: the expanded weights are conv3's kernel (the ReLU linearized)
    model = fs.load_model(DIGITS)
    kernel = model.module.conv3.weight.detach()[3]
    top = data["inputs"]["excite"][0]
    assert torch.allclose(torch.tensor(top["kernel"]), kernel[top["unit"]], atol=1e-3)
    assert data["classes"]["promoted"] and all(c["name"] for c in data["classes"]["promoted"])
    assert (tmp_path / "out" / "digits-relu3-u3-from-relu2.png").stat().st_size > 10_000
    # the figure's renders are kept in out/units with their identity, and a second run reuses them
    kept = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "units").glob("*.png")}
    assert len(kept) == len({r["unit"] for r in data["inputs"]["excite"] + data["inputs"]["inhibit"]}) + 1
    again = run("circuit", DIGITS, "-l", "relu3", "-u", 3, "--from", "relu2", "-k", 4, *given, "-o", tmp_path / "out",
                *FAST)
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "units").glob("*.png")} == kept


@pytest.mark.parametrize("args, expected", [
    (["-l", "relu3", "-u", "3", "--from", "relu9"], "Unknown layer 'relu9'"),
    (["-l", "relu3", "-u", "32", "--from", "relu2"], "which has 32 channels (0-31)"),
    (["-l", "relu2", "-u", "1", "--from", "relu3"], "does not run before"),
    (["-l", "relu3", "-u", "1", "--from", "relu2", "-k", "0"], "-k must be at least 1"),
    (["-l", "relu3", "-u", "1", "--from", "relu2", "--recipe", "fast"], "Unknown recipe 'fast'"),
])
def test_bad_input_is_one_line(args, expected, tmp_path):
    result = run("circuit", DIGITS, *args, "-o", tmp_path / "o", "--no-figure", *FAST)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and expected in result.output and "Traceback" not in result.output


@pytest.mark.integration
def test_atlas_build_records_circuits_and_circuit_reads_the_atlas(tmp_path):
    write_images(tmp_path / "data", 6, size=28)
    model = fs.load_model(DIGITS)
    with fs.Atlas(tmp_path / "atlas") as atlas:
        summary = atlas.build(model, ["relu3", "relu2"], units={"relu2": [0, 1], "relu3": [3]}, recipes=[TINY_RECIPE],
                              dataset=tmp_path / "data", exemplars=4)
        assert summary.circuits == 3  # relu2's units (classes), relu3's unit (inputs, classes)
        layer3 = atlas.layer("relu3")
        layer2 = atlas.layer("relu2")
        sections = atlas.store.circuit_sections(layer3.id, 3)
        assert sections.outputs is None and sections.classes is not None and sections.inputs is not None
        assert sections.inputs.exemplars == 4 and sections.inputs.source == "relu2"
        other = atlas.store.circuit_sections(layer2.id, 1)
        assert other.inputs is None and other.outputs is not None and other.classes is not None
        assert other.outputs.layer == "relu3"
        pair = atlas.store.circuit_pair(layer2.id, layer3.id)
        assert pair is not None and pair.kernel == (3, 3)
        assert fs.files.file_sha256(atlas.path / pair.file) == pair.sha256
        import numpy as np
        weights = np.load(atlas.path / pair.file)
        assert weights.shape == (32, 16, 3, 3)
        assert np.allclose(weights, model.module.conv3.weight.detach().numpy(), atol=1e-5)
        again = atlas.build(model, ["relu3", "relu2"], units={"relu2": [0, 1], "relu3": [3]}, recipes=[TINY_RECIPE],
                            dataset=tmp_path / "data", exemplars=4)
        assert again.circuits == 0  # nothing missing: nothing redone
    result = run("circuit", DIGITS, "-l", "relu3", "-u", 3, "--from", "relu2", "--atlas", tmp_path / "atlas",
                 "--json", tmp_path / "c.json", "-o", tmp_path / "out", *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "c.json").read_text())["exemplars"] == 4  # the atlas's top exemplars
    result = run("atlas", "build", tmp_path / "plain", "-m", DIGITS, "-l", "relu2,relu3", "--units", "0",
                 "--recipe", "none", "--dataset", tmp_path / "data", "--no-circuits", "-q")
    assert result.exit_code == 0, result.output
    with fs.Atlas(tmp_path / "plain", create=False) as plain:
        assert not plain.store.circuit_sections(plain.layer("relu3").id, 0)
