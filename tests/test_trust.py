"""Trust scores: the fooling fixture, brute-force checks of the path and 2-AFC scores, and the descriptions."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr
from typer.testing import CliRunner

import filterscope as fs
from filterscope.cli import app
from filterscope.trust import UnitTrust, machine_afc, path_similarity, spearman, trust_units
from filterscope.trust.describe import colours, consensus, spread
from filterscope.trust.paths import channel_vectors, path_layers

from .helpers.models import colour_independent, fooling, save_photos, smooth_photos

RECIPE = fs.get_recipe("paper").replace(size=32, scales=2, steps=20, reference_size=32)


@pytest.fixture(scope="module")
def fooled():
    model = fooling()
    result = fs.visualize_filters(model, "conv3", [0, 1, 2, 3], recipe=RECIPE, seed=0)
    renders = {u: result.images[u:u + 1] for u in range(4)}
    statuses = dict(enumerate(result.status))
    return trust_units(model, "conv3", [0, 1, 2, 3], smooth_photos(120), colour_independent(), renders=renders,
                       statuses=statuses)


def test_the_fooling_and_the_silent_unit_are_flagged_and_normal_units_are_not(fooled):
    normal, fooling_unit, silent, other = fooled
    assert "another-path" in fooling_unit.flags, fooling_unit.paths
    assert "another-path" in silent.flags and "silent" in silent.flags, silent.paths
    assert normal.flags == () and other.flags == (), (normal.paths, other.paths)
    assert fooling_unit.paths is not None and fooling_unit.paths.share < normal.paths.share  # type: ignore[union-attr]


@pytest.mark.integration
@pytest.mark.parametrize("recipe", ["filterscope", "lucid"])
def test_the_flags_do_not_depend_on_the_recipe(recipe):
    model = fooling()
    chosen = fs.get_recipe(recipe).replace(size=32, scales=2, steps=20, reference_size=32)
    result = fs.visualize_filters(model, "conv3", [0, 1, 3], recipe=chosen, seed=0)
    found = trust_units(model, "conv3", [0, 1, 3], smooth_photos(120), colour_independent(),
                        renders={u: result.images[i:i + 1] for i, u in enumerate((0, 1, 3))}, tasks=20)
    assert [("another-path" in t.flags) for t in found] == [False, True, False]


def test_path_similarity_equals_a_brute_force_computation():
    model = fooling()
    layers = path_layers(model, "conv3")
    assert [str(r) for r in layers] == ["conv1", "act1"]  # conv2/act2 have 4 channels: too few to rank
    images = smooth_photos(12, seed=3)
    render = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    vr, ve, vx = (channel_vectors(model, layers, x) for x in (render, images[:5], images[5:]))
    found = path_similarity(vr, ve, vx, 1.0)
    for i, ref in enumerate(layers):
        rho = lambda a, b: spearmanr(a.numpy(), b.numpy()).statistic  # noqa: E731
        r = sum(rho(a, b) for a in vr[ref] for b in ve[ref]) / (2 * 5)
        upper = sum(rho(a, b) for a, b in itertools.permutations(ve[ref], 2)) / (5 * 4)
        lower = sum(rho(a, b) for a in vx[ref] for b in ve[ref]) / (7 * 5)
        assert (found.render[i], found.upper[i], found.lower[i]) == pytest.approx((r, upper, lower), abs=1e-9)
    assert found.share == sum(r > low for r, low in zip(found.render, found.lower)) / 2


def test_spearman_averages_ties_like_scipy():
    a = torch.tensor([[1.0, 2.0, 2.0, 5.0, 0.0], [3.0, 3.0, 3.0, 1.0, 2.0]])
    b = torch.tensor([[0.0, 1.0, 1.0, 1.0, 9.0]])
    for i in range(2):
        assert float(spearman(a, b)[i, 0]) == pytest.approx(spearmanr(a[i], b[0]).statistic, abs=1e-12)


def _synthetic(n=200, d=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n, d, generator=generator)
    values = features[:, 0] + 0.5 * torch.randn(n, generator=generator)  # the unit reads feature 0
    return features, values


def test_random_references_score_chance_and_the_units_own_score_above():
    features, values = _synthetic()
    control = machine_afc(features, values, "random", tasks=2000, seed=1)
    assert abs(control.score - 0.5) < 0.05, control
    own = machine_afc(features, values, "exemplars", tasks=500, seed=1)
    assert own.score > 0.8 and own.stderr == pytest.approx((own.score * (1 - own.score) / 500) ** 0.5)


def test_the_2afc_score_in_closed_form_cases():
    values = torch.arange(40.0)
    separable = torch.zeros(40, 2)
    separable[20:, 0], separable[:20, 1] = 1.0, 1.0  # strong images point one way, weak ones the other
    assert machine_afc(separable, values, "exemplars", tasks=50).score == 1.0
    assert machine_afc(separable, values, "renders", renders=torch.tensor([[1.0, 0.0]]), tasks=50).score == 1.0
    assert machine_afc(separable, values, "renders", renders=torch.tensor([[0.0, 1.0]]), tasks=50).score == 0.0
    assert machine_afc(torch.ones(40, 3), values, "exemplars", tasks=50).score == 0.5  # ties count half
    with pytest.raises(fs.InvalidOptionError, match="at least 20 images"):
        machine_afc(torch.ones(12, 3), torch.arange(12.0), "exemplars")


def test_the_consensus_counts_up_the_wordnet_hierarchy():
    terriers, toys = [189, 190, 191, 192] * 5, [151, 152] * 6  # 20 terriers, 12 toy dogs: 32 dogs of 50
    found = consensus(terriers + toys + [409] * 18)
    assert found.text == "dog (32 of 50), mostly terriers (20)" and (found.group, found.count) == ("dog", 32)
    assert consensus([409, 530, 892, 409]).text == "clock (4 of 4), mostly analog clocks (2)"
    mixed = consensus([1, 400, 500, 600, 700])
    assert mixed.group is None and mixed.text.startswith("mixed: ")


def test_colours_and_spread_in_closed_form():
    red = torch.zeros(3, 8, 8)
    red[0] = 1.0
    gray = torch.full((3, 8, 8), 0.5)
    ((first, a), (second, b)) = colours([red, red, gray])
    assert (first, second) == ("red", "gray") and (a, b) == pytest.approx((2 / 3, 1 / 3))
    peak = torch.zeros(4, 4)
    peak[0, 0] = 1.0
    assert spread([peak, torch.ones(4, 4), torch.zeros(4, 4)]) == pytest.approx((1 / 16 + 1 + 0) / 3)


def test_a_trust_record_round_trips_through_json(fooled):
    import json

    for record in fooled:
        assert UnitTrust.from_dict(json.loads(record.to_json())) == record


SPEC = f"{Path(__file__).parent / 'helpers' / 'models.py'}:fooling"


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    return save_photos(tmp_path_factory.mktemp("photos"), 40)


@pytest.mark.integration
def test_the_trust_command_scores_visualization_pngs(tmp_path, photo_folder):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(RECIPE.to_json())
    made = CliRunner().invoke(app, ["visualize", "-m", SPEC, "-l", "conv3", "-f", "0,1", "--recipe", str(recipe), "-q",
                                    "-o", str(tmp_path / "out")])
    assert made.exit_code == 0, made.output
    pngs = [str(tmp_path / "out" / f"fooling-conv3-f000{u}.png") for u in (0, 1)]
    result = CliRunner().invoke(app, ["trust", *pngs, "--images", str(photo_folder), "--tasks", "40", "-q",
                                      "--json", str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    assert "conv3 unit 0: no flags" in result.output and "conv3 unit 1: another-path" in result.output
    assert "2-AFC (efficientnet_lite2 features, chance 0.50): renders" in result.output
    records = [UnitTrust.from_dict(r) for r in json.loads((tmp_path / "t.json").read_text())]
    assert [r.unit for r in records] == [0, 1] and all(r.images == 40 for r in records)
    assert records[0].score("exemplars").tasks == 40  # type: ignore[union-attr]


@pytest.mark.integration
def test_an_atlas_build_records_trust_and_the_cli_reads_it(tmp_path, photo_folder):
    summary = fs.build_atlas(tmp_path / "a", fooling(), "conv3", units=[0, 1], recipes=[RECIPE], dataset=photo_folder,
                             scores=False, circuits=False)
    assert summary.trust == 2
    with fs.Atlas(tmp_path / "a") as atlas:
        records = atlas.unit_trust(atlas.layer(atlas.model(), "conv3").id)
    assert sorted(records) == [0, 1] and records[0].flags == () and "another-path" in records[1].flags
    assert records[1].paths is not None and len(records[1].paths.layers) == 2
    shown = CliRunner().invoke(app, ["trust", "--atlas", str(tmp_path / "a"), "-l", "conv3"])
    assert shown.exit_code == 0 and "conv3 unit 1: another-path" in shown.output, shown.output
    missing = CliRunner().invoke(app, ["trust", "--atlas", str(tmp_path / "a"), "-l", "conv3", "-u", "3"])
    assert missing.exit_code == 1 and "no trust records for conv3 unit(s) 3" in missing.output
    assert "Traceback" not in missing.output
    again = fs.build_atlas(tmp_path / "a", fooling(), "conv3", units=[0, 1], recipes=[RECIPE], dataset=photo_folder,
                           scores=False, circuits=False)
    assert again.trust == 0  # kept, not done again


@pytest.mark.parametrize("args, message", [
    ([], "Give visualization PNGs with --images"),
    (["--atlas", "nowhere"], "--atlas needs --layer"),
])
def test_trust_errors_are_one_line(args, message):
    result = CliRunner().invoke(app, ["trust", *args])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_trust_units_takes_image_files_or_pil_images_and_refuses_other_things(photo_folder):
    model, judge = fooling(), colour_independent()
    files = sorted(photo_folder.iterdir())
    from_files = trust_units(model, "conv3", [0], files, judge, tasks=20)
    as_tensor = torch.stack([fs.prepare_image(model, f).pixels for f in files])
    assert from_files == trust_units(model, "conv3", [0], as_tensor, judge, tasks=20)
    with pytest.raises(fs.ArgumentTypeError, match=r"fs.trust_units: images must be .*, not list of int"):
        trust_units(model, "conv3", [0], [1, 2, 3], judge)
    with pytest.raises(fs.InvalidOptionError, match=r"trust_units\(\) takes images as a \(N,C,H,W\) tensor"):
        trust_units(model, "conv3", [0], torch.zeros(3, 32, 32), judge)
    with pytest.raises(fs.InvalidOptionError, match="at least 20 dataset images"):  # one image: a dataset of one
        trust_units(model, "conv3", [0], str(files[0]), judge)
    with pytest.raises(fs.InvalidOptionError, match="at least 20 dataset images"):
        trust_units(model, "conv3", [0], files[:10], judge)
