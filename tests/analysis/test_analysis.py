import json

import pytest
import torch
from PIL import Image

from filterscope import ChannelError
from filterscope.analysis import (
    Box,
    concentration,
    occlusion_study,
    parse_region,
    prepare_image,
    rank_filters,
    read_regions,
    sensitivity_maps,
)
from filterscope.errors import RegionError

from ..helpers.models import color_net

BACKGROUND = (51, 102, 153)  # exactly 0.2, 0.4, 0.6


def square_image(color=(255, 0, 0), box=(8, 8, 24, 24), size=(32, 32)):
    """Background (0.2, 0.4, 0.6) with a colored square: a 16x16 square covers a quarter of 32x32."""
    image = Image.new("RGB", size, BACKGROUND)
    image.paste(color, box)
    return image


def test_ranking_has_the_exact_means():
    # ColorNet's first ReLU: channels see R, G, B and 1 - R.
    ranking = rank_filters(color_net(), [square_image()], "act:0", k=3)
    expected = torch.tensor([0.2 * 0.75 + 0.25, 0.4 * 0.75, 0.6 * 0.75, 1 - (0.2 * 0.75 + 0.25)])
    assert torch.allclose(ranking.means, expected, atol=1e-6)
    assert ranking.top == [3, 2, 0]
    assert ranking.rows()[0] == {"rank": 1, "filter": 3, "mean_activation": pytest.approx(0.6), "in_top_k": True}


def test_occluding_the_red_square_drops_exactly_the_red_filter():
    study = occlusion_study(color_net(), square_image(), "act:0", {"red square": [Box(8, 8, 24, 24)],
                                                                   "corner": [Box(0, 0, 4, 4)]}, k=3, fill="black")
    original, occluded, _corner = study.means
    change = occluded - original
    assert change[0] == pytest.approx(-0.25, abs=1e-6)  # red: the square's red is gone
    assert change[1] == pytest.approx(0, abs=1e-6) and change[2] == pytest.approx(0, abs=1e-6)
    assert change[3] == pytest.approx(0.25, abs=1e-6)  # "not red" rises
    rows = {r.name: r for r in study.rows}
    assert rows["original"].top == [3, 2, 0] and rows["original"].common == 3
    assert rows["red square"].top == [3, 2, 1] and rows["red square"].common == 2
    assert rows["red square"].occluded_share == pytest.approx(0.25)
    assert "| red square | [3, 2, 1] | 2/3 |" in study.markdown()
    assert study.to_csv().splitlines()[2].startswith("red square,3 2 1,2,3,")


def test_sensitivity_map_of_the_red_filter_peaks_over_the_square():
    maps = sensitivity_maps(color_net(), square_image(), "act:0", [0, 1], patch=8, stride=4, fill="gray")
    red = maps.maps[0]
    y, x = maps.peak(0)
    assert 8 <= y < 24 and 8 <= x < 24
    assert red[10:22, 10:22].min() > 0  # gray over red lowers the red filter...
    assert red[:4, :4].max() < 0  # ...and raises it over the darker background
    assert maps.baseline[0] == pytest.approx(0.4, abs=1e-6)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_sensitivity_maps_do_not_depend_on_the_batch(batch_size):
    reference = sensitivity_maps(color_net(), square_image(), "act:0", [0, 3], patch=8, stride=8, batch_size=64)
    maps = sensitivity_maps(color_net(), square_image(), "act:0", [0, 3], patch=8, stride=8, batch_size=batch_size)
    assert torch.allclose(maps.maps, reference.maps, atol=1e-6)


def test_several_images_stability_and_frequency():
    red, blue = square_image(), square_image(color=(0, 0, 255))
    ranking = rank_filters(color_net(), [red, blue], "act:0", k=2, names=["red", "blue"])
    # red image: [3, 2]; blue image: B = 0.6*0.75 + 0.25 = 0.7, 1-R = 0.85 → [3, 2]
    assert ranking.per_image_top() == [[3, 2], [3, 2]]
    assert ranking.stability == 1.0 and ranking.frequency() == {3: 2, 2: 2}
    assert ranking.rows()[0]["image:blue"] == pytest.approx(0.85)


def test_augmentations_are_seeded():
    a = rank_filters(color_net(), [square_image()], "act:0", k=2, augment=3, seed=1)
    b = rank_filters(color_net(), [square_image()], "act:0", k=2, augment=3, seed=1)
    c = rank_filters(color_net(), [square_image()], "act:0", k=2, augment=3, seed=2)
    assert torch.equal(a.means, b.means) and not torch.equal(a.means, c.means)


def test_concentration_tells_the_scenarios_apart():
    dominated = torch.tensor([20.0] + [1.0] * 99)
    groups = torch.tensor([5.0] * 10 + [1.0] * 90)
    flat = torch.ones(100) + torch.linspace(0, 0.1, 100)
    assert concentration(dominated, 10).scenario.endswith("(i)")
    assert concentration(groups, 10).scenario.endswith("(ii)")
    assert concentration(flat, 10).scenario.endswith("(iii)")
    assert concentration(groups, 10).top_k_share == pytest.approx(50 / 140)
    assert concentration(dominated, 10).top_to_median == pytest.approx(20.0)
    assert concentration(torch.ones(100), 10).effective_filters == pytest.approx(100.0)


def test_k_larger_than_the_layer_is_an_error():
    with pytest.raises(ChannelError, match="k=5 .* 4 filters"):
        rank_filters(color_net(), [square_image()], "act:0", k=5)


def test_boxes_pixels_percent_and_errors():
    assert Box.parse("10,20,30,40").pixels((100, 50)) == (10, 20, 30, 40)
    assert Box.parse("10%,20%,50%,100%").pixels((200, 50)) == (20, 10, 100, 50)
    with pytest.raises(RegionError, match="zero area"):
        Box.parse("10,10,10,20").pixels((100, 100), "flat")
    with pytest.raises(RegionError, match="'big' .* outside the 100x50 image"):
        Box.parse("0,0,120,20").pixels((100, 50), "big")
    with pytest.raises(RegionError, match="pixels or percentages"):
        Box.parse("10%,0,20,20")
    with pytest.raises(RegionError, match="x0,y0,x1,y1"):
        Box.parse("1,2,3")
    name, boxes = parse_region("eyes = 1,2,3,4+5,6,7,8")
    assert name == "eyes" and boxes == [Box(1, 2, 3, 4), Box(5, 6, 7, 8)]
    with pytest.raises(RegionError, match="NAME=x0"):
        parse_region("1,2,3,4")


def test_region_files(tmp_path):
    js = tmp_path / "r.json"
    js.write_text(json.dumps({"eyes": [[1, 2, 3, 4], ["5%", "6%", "7%", "8%"]], "nose": [9, 9, 10, 10]}))
    assert read_regions(js) == {"eyes": [Box(1, 2, 3, 4), Box(5, 6, 7, 8, relative=True)], "nose": [Box(9, 9, 10, 10)]}
    cs = tmp_path / "r.csv"
    cs.write_text("name,x0,y0,x1,y1\neyes,1,2,3,4\neyes,5,6,7,8\nface,0%,0%,50%,50%\n")
    assert read_regions(cs) == {"eyes": [Box(1, 2, 3, 4), Box(5, 6, 7, 8)], "face": [Box(0, 0, 50, 50, relative=True)]}
    bad = tmp_path / "bad.csv"
    bad.write_text("eyes,1,2\n")
    with pytest.raises(RegionError, match="bad.csv:1"):
        read_regions(bad)


@pytest.mark.parametrize("fit, box, expected", [
    ("crop", (16, 0, 48, 32), (0, 0, 32, 32)),      # 64x32: the center crop starts at x = 16
    ("squash", (16, 0, 48, 32), (8, 0, 24, 32)),
    ("pad", (0, 0, 64, 32), (0, 8, 32, 24)),        # 64x32 → 32x16, centred
])
def test_fit_modes_place_regions(fit, box, expected):
    item = prepare_image(color_net(), Image.new("RGB", (64, 32)), fit=fit)
    assert item.pixels.shape == (3, 32, 32)
    assert item.placement.box_to_input(box) == expected


@pytest.mark.parametrize("suffix", ["jpg", "png", "webp", "bmp", "tiff"])
def test_image_formats(tmp_path, suffix):
    path = tmp_path / f"x.{suffix}"
    square_image().save(path)
    ranking = rank_filters(color_net(), [path], "act:0", k=1)
    assert ranking.top == [3] and ranking.image_names == [f"x.{suffix}"]


def test_palette_images_become_rgb(tmp_path):
    path = tmp_path / "p.png"
    square_image().convert("P").save(path)
    assert rank_filters(color_net(), [path], "act:0", k=1).top == [3]


@pytest.mark.integration
def test_very_large_jpeg_is_decoded_small(tmp_path):
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (12000, 8000), BACKGROUND).save(path, quality=50)
    item = prepare_image(color_net(), path)
    assert item.original_size == (12000, 8000)
    assert item.pixels.shape == (3, 32, 32)
    assert item.placement.box_to_input((6000, 4000, 12000, 8000))[2:] == (32, 32)
    study = occlusion_study(color_net(), item, "act:0", {"right half": [Box(6000, 0, 12000, 8000)]}, k=2)
    assert study.rows[1].occluded_share > 0.3
