"""``filterscope explain`` and ``filterscope seeded`` from the command line."""

import json

import pytest
from typer.testing import CliRunner

from filterscope.cli import app
from filterscope.images import read_png_metadata

from ..helpers.atlases import write_images

runner = CliRunner()
DIGITS = "examples/digits.py:digits"


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.integration
def test_explain_prints_the_views_and_writes_figures_and_json(tmp_path):
    image = write_images(tmp_path / "images", 1, size=28)[0]
    result = run("explain", image, "-m", DIGITS, "-l", "relu2", "-k", 3, "--positions", 4, "--groups", 3,
                 "--no-renders", "--json", tmp_path / "e.json", "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    assert "digits relu2 on img000.png: class" in result.output
    assert "neuron groups of the positive part" in result.output
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["img000-relu2-attribution.png", "img000-relu2-dictionary.png", "img000-relu2-groups.png"]
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["dictionary"]["grid"] == [14, 14] and len(data["dictionary"]["units"][0][0]) == 3
    assert len(data["groups"]["spatial"]) == 3 and len(data["groups"]["attribution"]) == 3
    assert data["attribution"]["name"] is not None and len(data["attribution"]["map"]) == 14


@pytest.mark.parametrize("args, expected", [
    (["-l", "relu9"], "Unknown layer 'relu9'"),
    (["-l", "fc"], "needs a layer with a spatial grid"),
    (["-l", "relu2", "--part", "both"], "Unknown --part 'both'"),
    (["-l", "relu2", "--groups", "0"], "--groups must be at least 1"),
    (["-l", "relu2", "--class", "10"], "which has 10 classes (0-9)"),
])
def test_explain_bad_input_is_one_line(args, expected, tmp_path):
    image = write_images(tmp_path / "images", 1, size=28)[0]
    result = run("explain", image, "-m", DIGITS, *args, "--no-renders", "-o", tmp_path / "out", "-q")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and expected in result.output and "Traceback" not in result.output


@pytest.mark.integration
def test_seeded_writes_a_png_with_metadata(tmp_path):
    image = write_images(tmp_path / "images", 1, size=28)[0]
    result = run("seeded", "invert", image, "-m", DIGITS, "-l", "relu2", "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    png = next((tmp_path / "out").glob("*.png"))
    assert read_png_metadata(png)["objective"].startswith("cosine(relu2")
    result = run("seeded", "accentuate", image, "-m", DIGITS, "-l", "relu3", "-o", tmp_path / "o2", "-q")
    assert result.exit_code == 1 and "accentuate needs --unit and --keep" in result.output
    result = run("seeded", "melt", image, "-m", DIGITS, "-l", "relu3", "-o", tmp_path / "o3", "-q")
    assert result.exit_code == 1 and "Unknown mode 'melt'" in result.output
