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
