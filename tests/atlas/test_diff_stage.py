"""The diff stage: one module under atlas/stages/ and its registration; each built layer diffed against another
network over the pass's images, stored, read back, shown by atlas status, never computed twice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import filterscope as fs
from filterscope.atlas.stages import STAGES, stage_order
from filterscope.atlas.stages.diff import DiffSettings, model_diffs
from filterscope.cli import app
from filterscope.errors import InvalidOptionError

from ..helpers.atlases import write_images
from ..helpers.models import small_net

LAYERS, UNITS = ["features.2", "features.4"], {"features.2": [0], "features.4": [0]}
SPEC = f"{Path(__file__).parents[1] / 'helpers' / 'models.py'}:small_net"


def test_a_build_diffs_each_layer_against_the_other_network_once(tmp_path):
    write_images(tmp_path / "data", 12)
    settings = DiffSettings(model=SPEC, images=12)
    with fs.Atlas(tmp_path / "atlas") as atlas:
        summary = atlas.build(small_net(), LAYERS, units=UNITS, recipes=(), dataset=tmp_path / "data", exemplars=2,
                              stages=[settings])
        assert summary.of("diff").done == 2 and not summary.failures
        (found,) = model_diffs(atlas.store, atlas.layer("features.4").id)
        (match,) = found.matches
        assert (match.layer_a, match.layer_b, found.images) == ("features.4", "features.4", 12)
        assert match.share == 1.0 and all(m.a == m.b for m in match.matches)  # the same network: every unit itself
        assert [round(v, 6) for _, v in found.same_names()] == [1.0] * len(found.layers_a)
        assert "diff" in [s.name for s in stage_order()] and STAGES.get("diff").after[0] == "exemplars"
        again = atlas.build(small_net(), LAYERS, units=UNITS, recipes=(), dataset=tmp_path / "data", exemplars=2,
                            stages=[settings])
        assert again.of("diff").done == 0
        torch.save(small_net(7).module.state_dict(), tmp_path / "other.pt")  # another checkpoint of the network
        other = atlas.build(small_net(), ["features.4"], units={"features.4": [0]}, recipes=(),
                            dataset=tmp_path / "data", exemplars=2,
                            stages=[DiffSettings(model=SPEC, weights=str(tmp_path / "other.pt"), images=12)])
        assert other.of("diff").done == 1
        newest, oldest = model_diffs(atlas.store, atlas.layer("features.4").id)
        assert oldest == found and "other.pt" in newest.model_b and newest.matches[0].share < 1.0
        (shown,) = [s for s in atlas.status().stages if s.stage == "diff" and s.layer == "features.4"]
        assert shown.text.startswith("2 diff(s); the newest against")


def test_an_atlas_without_the_stage_reads_no_diffs_and_bad_settings_are_named(tmp_path):
    write_images(tmp_path / "data", 12)
    with fs.Atlas(tmp_path / "atlas") as atlas:
        atlas.build(small_net(), ["features.4"], units={"features.4": [0]}, recipes=(), dataset=tmp_path / "data",
                    exemplars=2)
        assert model_diffs(atlas.store, atlas.layer("features.4").id) == []
    with pytest.raises(InvalidOptionError, match="images must be at least 10"):
        DiffSettings(model=SPEC, images=3)


@pytest.mark.parametrize("args, message", [
    (["--diff-with", SPEC], "--diff-with needs a --dataset"),
    (["--diff-weights", "random"], "--diff-weights goes with --diff-with"),
])
def test_atlas_build_diff_errors_are_one_line(tmp_path, args, message):
    result = CliRunner().invoke(app, ["atlas", "build", str(tmp_path / "a"), "-m", SPEC, "-l", "features.4", *args])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output, result.output
