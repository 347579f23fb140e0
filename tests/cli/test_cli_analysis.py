import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from filterscope.cli import app

runner = CliRunner()


@pytest.fixture
def cat(tmp_path):
    from skimage import data

    path = tmp_path / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(path)
    return path


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.integration
def test_top_prints_the_ranking_and_writes_tables_and_plot(cat, tmp_path):
    out = tmp_path / "out"
    result = run("top", cat, "-m", "resnet18", "-w", "random", "-l", "layer3", "-k", "4", "-o", out,
                 "--json", out / "t.json", "--csv", out / "t.csv")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split() == ["rank", "filter", "mean", "activation"]
    printed = [int(line.split()[1]) for line in lines[2:6]]
    table = json.loads((out / "t.json").read_text())
    assert table["top"] == printed and len(table["filters"]) == 256
    assert (out / "t.csv").read_text().splitlines()[0] == "rank,filter,mean_activation,in_top_k"
    assert "concentration: top-4 share" in result.output
    assert (out / "chelsea-layer3-top4.png").is_file()


@pytest.mark.integration
def test_top_over_a_folder_reports_stability(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, color in enumerate(["red", "green", "blue"]):
        Image.new("RGB", (64, 48), color).save(folder / f"{i}.png")
    result = run("top", folder, "-m", "resnet18", "-w", "random", "-l", "layer2", "-k", "3", "--augment", "2",
                 "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "over 3 image(s), 2 augmented views each" in result.output and "stability:" in result.output


@pytest.mark.integration
def test_occlude_prints_table_one_and_writes_it(cat, tmp_path):
    out = tmp_path / "out"
    result = run("occlude", cat, "-m", "resnet18", "-w", "random", "-l", "layer3", "-k", "5", "-o", out,
                 "-r", "eyes=130,80,205,150+295,105,345,165", "-r", "face=95,20,355,285", "--fill", "mean",
                 "--maps", "--maps-k", "2", "--stride", "32", "-q")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith(("original", "eyes", "face"))]
    assert len(rows) == 3 and "5/5" in rows[0]
    markdown = (out / "chelsea-layer3-occlusion.md").read_text()
    assert markdown.splitlines()[0].startswith("| image | top 5 filters | # common |")
    assert {p.name for p in out.iterdir()} == {
        "chelsea-layer3-occlusion.md", "chelsea-layer3-occlusion.csv", "chelsea-layer3-occlusion-sheet.png",
        "chelsea-layer3-sensitivity.png"}


def test_occlude_with_a_regions_file(cat, tmp_path):
    regions = tmp_path / "regions.json"
    regions.write_text(json.dumps({"left eye": [130, 80, 205, 150], "corner": ["0%", "0%", "10%", "10%"]}))
    result = run("occlude", cat, "-m", "resnet18", "-w", "random", "-l", "layer2", "-k", "3", "--regions", regions,
                 "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "left eye" in result.output
    assert "note: region 'corner' lies outside the part of the image the model sees" in result.output


def _broken_images(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 64), "red").save(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:150])
    return {"missing": (tmp_path / "nope.jpg", "Image not found"), "text": (text, "Not an image file"),
            "truncated": (cut, "truncated or corrupt")}


@pytest.mark.integration
@pytest.mark.parametrize("case", ["missing", "text", "truncated"])
@pytest.mark.parametrize("command", ["top", "occlude"])
def test_bad_images_give_one_line(case, command, tmp_path):
    path, message = _broken_images(tmp_path)[case]
    extra = ["-r", "a=0,0,1,1"] if command == "occlude" else []
    result = run(command, path, "-m", "resnet18", "-w", "random", "-l", "layer2", "-o", tmp_path / "o", *extra)
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert message in result.output and path.name in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["-r", "big=0,0,1000,10"], "'big' (0,0,1000,10) is outside the 451x300 image"),
    (["-r", "flat=10,10,10,50"], "'flat' has zero area"),
    (["-r", "x=1,2,3"], "Bad box '1,2,3'"),
    (["-r", "a=0,0,9,9", "--fill", "pink"], "Unknown fill 'pink'"),
    (["-r", "a=0,0,9,9", "-k", "999"], "k=999 is not possible for layer layer2 of resnet18, which has 128 filters"),
    ([], "Give at least one --region"),
])
@pytest.mark.integration
def test_occlude_errors(cat, tmp_path, args, message):
    result = run("occlude", cat, "-m", "resnet18", "-w", "random", "-l", "layer2", "-o", tmp_path / "o", *args)
    assert result.exit_code == 1, result.output
    assert message in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_top_k_too_large(cat, tmp_path):
    result = run("top", cat, "-m", "resnet18", "-w", "random", "-l", "layer1", "-k", "65", "-o", tmp_path / "o")
    assert result.exit_code == 1 and "which has 64 filters (use 1-64)" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.integration
def test_occluding_the_face_changes_the_top_10_more_than_background(lite0):
    """Default model, the cat photo, squashed so the background is in view (the center crop is all cat)."""
    from skimage import data

    from filterscope.analysis import Box, occlusion_study

    cat_image = Image.fromarray(data.chelsea())  # 451 x 300; background at the right edge, x > 385
    strip = 66
    variants = {"face": [Box(170, 0, 170 + strip, 300)], "background": [Box(451 - strip, 0, 451, 300)],
                "whole face": [Box(95, 20, 355, 285)]}
    study = occlusion_study(lite0, cat_image, "_blocks.15", variants, k=10, fit="squash")
    rows = {r.name: r for r in study.rows}
    assert rows["face"].occluded_share == pytest.approx(rows["background"].occluded_share, abs=0.01)
    assert rows["face"].common < rows["background"].common
    assert rows["face"].rank_correlation < rows["background"].rank_correlation
    assert rows["whole face"].common <= 5 and rows["whole face"].mean_change < -0.3


@pytest.mark.parametrize("command", ["top", "occlude"])
def test_a_bad_fit_is_one_line_and_exit_1(cat, tmp_path, command):
    extra = ["-r", "eye=1,1,5,5"] if command == "occlude" else []
    result = run(command, cat, "-m", "resnet18", "-w", "random", "-l", "layer3", "--fit", "bogus", "-o", tmp_path,
                 *extra)
    assert result.exit_code == 1
    assert result.output.strip() == "error: fit must be one of crop, squash, pad, not 'bogus'"
    assert "Traceback" not in result.output


def test_shared_options_are_declared_once_and_reach_every_command():
    import inspect

    from filterscope.cli import analyze, visualize

    for command in (visualize.visualize_command, analyze.top_command):
        names = set(inspect.signature(command).parameters)
        assert {"recipe_name", "steps", "lr", "max_memory", "precision", "channels_last"} <= names
        assert "recipe" not in names and "runtime" not in names  # built by the bundles
    occlude = set(inspect.signature(analyze.occlude_command).parameters)
    assert {"precision", "channels_last"} <= occlude and "max_memory" not in occlude


def test_recipe_options_build_the_recipe_the_command_receives(tmp_path):
    result = run("visualize", "-m", "resnet18", "-w", "random", "-l", "layer1.0.conv1", "-f", "1", "--recipe", "lucid",
                 "--size", "24", "--scales", "1", "--steps", "2", "--lr", "0.07", "-q", "--max-memory", "1G",
                 "-o", tmp_path)
    assert result.exit_code == 0, result.output
    from filterscope import read_png_metadata

    meta = read_png_metadata(tmp_path / "resnet18-layer1.0.conv1-f0001.png")
    recipe = json.loads(meta["recipe"])
    assert (recipe["param"], recipe["size"], recipe["steps"], recipe["lr"]) == ("fft", 24, 2, 0.07)
    assert recipe["transforms"]["kind"] == "affine" and recipe["transforms"]["pad"] == 12
