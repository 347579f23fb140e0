import pytest
from PIL import Image

from filterscope.atlas import Atlas
from filterscope.demo import DemoPlan, run_demo
from filterscope.images import read_png_metadata

from .helpers.models import small_net
from .helpers.recipes import SMALL


@pytest.mark.integration
def test_demo_writes_the_three_figures_and_every_image(tmp_path):
    plan = DemoPlan(figure1_layer="features.5", figure1_filter=3, middle_layer="features.3",
                    middle_filters=(0, 1, 2, 3, 4, 5), deep_layer="features.5", deep_filters=(6, 7, 8, 9, 10, 11),
                    analysis_layer="features.5", top_k=4, visualize_k=2, maps_k=2, patch=8, stride=4,
                    atlas_layers=("features.3", "features.5"), atlas_units=3, reference_images=12,
                    map_layer="features.5", map_grid=2, atlas_recipe=SMALL)
    labels = []
    outputs = run_demo(small_net(), tmp_path, plan=plan, recipe=SMALL,
                       progress=lambda label, total: labels.append((label, total)))
    figures = outputs.figures
    assert [p.name for p in figures] == ["figure5_top10.png", "figure1_scales.png", "grid_middle_features_3.png",
                                         "grid_deep_features_5.png", "figure4_top5.png",
                                         "figure6_occlusions.png", "sensitivity_top3.png", "atlas_features_3.png",
                                         "atlas_features_5.png", "atlas_map_features_5.png"]
    table = (tmp_path / "table1_occlusion.md").read_text()
    assert table.count("\n") == 2 + 1 + 8 and "| whole face |" in table and "4/4" in table
    assert outputs.table.splitlines()[1].startswith("original")
    for path in figures:
        with Image.open(path) as figure:
            assert figure.size[0] > 400
    # Figure 1: the same total number of steps at a fixed small size, a fixed 224 px, and upscaled.
    sizes = {}
    for run in "abc":
        (png,) = (tmp_path / "figure1" / run).iterdir()
        with Image.open(png) as image:
            sizes[run] = image.size[0]
        assert read_png_metadata(png)["filter"] == "3"
    assert sizes == {"a": SMALL.size, "b": 224, "c": SMALL.output_size}
    assert {total for label, total in labels} == {SMALL.total_steps}
    assert len(list((tmp_path / "filters").iterdir())) == 12 + 2
    # the atlas: 3 units of two layers, rendered, with exemplars from the reference set of photo crops
    assert len(list((tmp_path / "reference-set").glob("*.jpg"))) == 12
    with Atlas(tmp_path / "atlas", create=False) as atlas:
        assert [(s.layer, s.done + s.inactive) for s in atlas.status().renders] == [("features.3", 3),
                                                                                  ("features.5", 3)]
        record = atlas.unit("features.5", 2)
        assert len(record.exemplars["max"]) == 9 and all(e.has_crop for e in record.exemplars["max"])
        assert record.stats.images == 12
        found = atlas.map("features.5")  # the activation atlas, over the same 12 images
        assert found.grid == 2 and sum(c.count for c in found.cells) <= 12 and all(c.icon for c in found.cells)
