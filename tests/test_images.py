import os

import pytest
from PIL import Image

from filterscope import ImageError
from filterscope.images import load_image, read_png_metadata, save_png


def test_png_metadata_round_trip(tmp_path):
    image = Image.new("RGB", (8, 8), (200, 10, 30))
    path = save_png(image, tmp_path / "sub" / "x.png", {"model": "m", "filter": "7"})
    assert read_png_metadata(path) == {"model": "m", "filter": "7"}
    assert load_image(path).getpixel((0, 0)) == (200, 10, 30)
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_load_image_converts_modes_and_honors_exif(tmp_path):
    gray = tmp_path / "g.png"
    Image.new("L", (4, 2), 77).save(gray)
    assert load_image(gray).mode == "RGB" and load_image(gray).getpixel((0, 0)) == (77, 77, 77)
    rgba = tmp_path / "a.png"
    Image.new("RGBA", (2, 2), (0, 0, 0, 0)).save(rgba)
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    rotated = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.new("RGB", (40, 20), "red").save(rotated, exif=exif)
    assert load_image(rotated).size == (20, 40)


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(ImageError, match="not found: .*nope.png"):
        load_image(tmp_path / "nope.png")
    text = tmp_path / "t.png"
    text.write_text("hello")
    with pytest.raises(ImageError, match="Not an image .*t.png"):
        load_image(text)
    good = tmp_path / "c.jpg"
    Image.new("RGB", (64, 64), "blue").save(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageError, match="cut.jpg"):
        load_image(cut)


def test_results_show_themselves_in_a_notebook():
    import io

    import torch
    from PIL import Image

    import filterscope as fs
    from filterscope.analysis.occlusion import OcclusionRow, OcclusionStudy
    from filterscope.analysis.ranking import Ranking

    from .helpers.models import constant

    result = fs.visualize_filters(constant(), "conv", [0, 1], recipe=fs.Recipe(size=24, scales=1, steps=2,
                                                                             reference_size=None))
    strip = Image.open(io.BytesIO(result._repr_png_()))
    assert strip.format == "PNG" and strip.size == (2 * 24 + 4, 24)  # two 24 px renders, 4 px apart
    means = torch.tensor([0.1, 3.0, -1.0, 2.0])
    ranking = Ranking("net", "conv", 2, ["cat <1>.jpg"], means[None], means)
    table = ranking._repr_html_()
    assert "<td>1</td><td>1</td><td>3</td>" in table and "<td>2</td><td>3</td><td>2</td>" in table
    assert "top 2 of 4 filters over 1 image(s)" in table
    row = OcclusionRow("eyes <&>", [1, 3], 2, -0.25, 0.9, 0.1)
    study = OcclusionStudy("net", "conv", "cat.jpg", 2, "gray", [row], [], means)
    assert "<td>eyes &lt;&amp;&gt;</td>" in study._repr_html_() and "-25.0%" in study._repr_html_()
