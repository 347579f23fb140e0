"""Honest baselines: random networks that are alive, and renders whose objective did not rise reported as such."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import filterscope as fs
from filterscope.cli import app
from filterscope.engine.render import improved
from filterscope.images import read_png_metadata
from filterscope.zoo.calibration import activation_scales, photo_views, reestimate_batchnorm
from filterscope.zoo.weights import weights_fingerprint

from ..helpers.models import PLAIN, constant

TINY = fs.get_recipe("paper").replace(size=24, scales=2, steps=3)


def test_reestimated_statistics_are_the_mean_and_variance_of_the_inputs():
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0]], [[0.0]], [[0.0]]], [[[0.0]], [[2.0]], [[-1.0]]]]))
    net = nn.Sequential(conv, nn.BatchNorm2d(2))
    images = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert reestimate_batchnorm(net, PLAIN, images, batch_size=3) == 1
    out = conv(images).detach()
    bn = net[1]
    # a cumulative average of the batches' statistics (batches of 3, 3, 3, 1: each weighs the same)
    batches = [out[i:i + 3] for i in range(0, 10, 3)]
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    variances = torch.stack([b.var(dim=(0, 2, 3), unbiased=True) for b in batches]).mean(0)
    assert torch.allclose(bn.running_mean, means, atol=1e-6)
    assert torch.allclose(bn.running_var, variances, atol=1e-6)
    assert not net.training and not bn.training and bn.momentum == 0.1  # frozen again, momentum restored
    assert torch.equal(conv.weight[1, 1], torch.tensor([[2.0]]))  # no weight changed


@pytest.mark.integration
def test_a_random_lite0_is_alive_at_every_layer_and_reproducible():
    alive = fs.load_model("efficientnet_lite0", "random")
    dead = fs.load_model("efficientnet_lite0", "random", calibrate=False)
    views = photo_views(alive.preprocessing, crops_per_image=1, seed=9)  # not the calibration's views
    scales = activation_scales(alive.module, alive.preprocessing, views)
    assert len(scales) > 100 and all(1e-2 < s < 1e2 for s in scales.values()), \
        {k: v for k, v in scales.items() if not 1e-2 < v < 1e2}
    assert activation_scales(dead.module, dead.preprocessing, views)["_blocks.15._bn2"] < 1e-6  # what it fixes
    assert alive.weights == fs.zoo.WeightsSource.random(0, 110) and alive.weights.calibrated
    again = fs.zoo.reload_model("efficientnet_lite0", fs.zoo.WeightsSource.from_json(alive.weights.to_json()))
    assert weights_fingerprint(again.module) == weights_fingerprint(alive.module)
    old = fs.zoo.reload_model("efficientnet_lite0", fs.zoo.WeightsSource.recorded(None, "random (seed 0)"))
    assert weights_fingerprint(old.module) == weights_fingerprint(dead.module)  # old records reload as they were


@pytest.mark.integration
def test_random_lite0_units_rise_to_the_trained_networks_order(lite0):
    recipe = fs.get_recipe("paper").replace(size=96, scales=3, steps=12)
    alive = fs.load_model("efficientnet_lite0", "random")
    random_run = fs.visualize_filters(alive, "_blocks.15", [5, 6, 7], recipe=recipe, seed=0)
    trained_run = fs.visualize_filters(lite0, "_blocks.15", [5, 6, 7], recipe=recipe, seed=0)
    assert random_run.status == ["ok"] * 3
    assert bool((random_run.values > random_run.initial_values + 0.5).all()), random_run.values
    ratio = float(random_run.values.mean() / trained_run.values.mean())
    assert 0.1 < ratio < 10, ratio  # of the same order (the degenerate network stayed at 1e-10)


def test_improved_tells_a_rise_from_float_noise():
    initial = torch.tensor([-2.17e-10, 0.1, 1.0, 1.0, 0.0])
    final = torch.tensor([-6.88e-10, 2.5, 1.0 + 1e-7, 1.01, 0.0])
    assert improved(initial, final).tolist() == [False, True, False, True, False]


def test_a_unit_that_cannot_rise_is_not_improved_in_results_and_pngs(tmp_path):
    result = fs.visualize_filters(constant(), "conv", [0, 1], recipe=TINY, seed=0)
    assert result.status == ["not-improved", "ok"]
    paths = fs.save_result(result, tmp_path)
    assert read_png_metadata(paths[0])["status"] == "not-improved"  # saved, and marked


def test_the_cli_names_a_not_improved_unit_and_exits_1(tmp_path):
    spec = f"{Path(__file__).parents[1] / 'helpers' / 'models.py'}:constant"
    args = ["visualize", "-m", spec, "-l", "conv", "-f", "0,1", "--size", "24", "--scales", "2", "--steps", "3", "-q",
            "-o", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "1 of 2 visualization(s) are not-improved" in result.output and "channel(conv, 0)" in result.output
    assert "Traceback" not in result.output
    assert (tmp_path / "constant-conv-f0000.png").is_file()  # the image is kept, with its status
    again = CliRunner().invoke(app, args)  # resumed: still named, still 1
    assert again.exit_code == 1 and "not-improved" in again.output


def test_atlas_records_and_counts_not_improved_renders(tmp_path):
    fs.build_atlas(tmp_path / "a", constant(), "conv", units=[0, 1], recipes=[TINY], scores=False)
    with fs.Atlas(tmp_path / "a") as atlas:
        assert atlas.unit("conv", 0).renders[0].status == "not-improved"
        assert atlas.unit("conv", 1).renders[0].status == "ok"
        (row,) = atlas.status().renders
        assert (row.done, row.not_improved, row.total) == (1, 1, 2)
    status = CliRunner().invoke(app, ["atlas", "status", str(tmp_path / "a")])
    assert status.exit_code == 0 and "not-improved" in status.output


def test_atlas_build_exits_1_naming_the_not_improved_units(tmp_path):
    spec = f"{Path(__file__).parents[1] / 'helpers' / 'models.py'}:constant"
    result = CliRunner().invoke(app, ["atlas", "build", str(tmp_path / "a"), "-m", spec, "-l", "conv", "--units", "0,1",
                                      "--size", "24", "--scales", "2", "--steps", "3", "--no-scores", "-q"])
    assert result.exit_code == 1, result.output
    assert "1 render(s) are not-improved" in result.output and "conv unit 0" in result.output
    assert "Traceback" not in result.output
