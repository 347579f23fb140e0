"""Trust scores: the fooling fixture, brute-force checks of the path and 2-AFC scores, and the descriptions."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from typer.testing import CliRunner

import filterscope as fs
from filterscope.cli import app
from filterscope.trust import (
    AFCScore,
    TrustData,
    UnitTrust,
    machine_afc,
    path_similarity,
    render_test,
    spearman,
    trust_units,
)
from filterscope.trust.describe import colours, consensus, spread
from filterscope.trust.judges import Judge, Standardized, judge_for
from filterscope.trust.paths import channel_vectors, path_layers

from ..helpers.models import colour_independent, fooling, save_photos, smooth_photos
from ..helpers.recipes import TRUST_RECIPE as RECIPE


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
    # the fooling unit (1) is flagged whatever the recipe, the plain unit 3 never; the plain unit 0's render is
    # closer to its natural path than the fooling unit's (with a Fourier parameterization it can still fall below
    # every held-out exemplar: the flag then says it is further from the natural path than any natural image)
    assert [("another-path" in t.flags) for t in (found[1], found[2])] == [True, False]
    assert found[0].paths.closeness > found[1].paths.closeness  # type: ignore[union-attr, operator]


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

    def closeness(i: int) -> float:  # item 0: the render (its two images averaged); 1-5: the exemplars
        total = 0.0
        for ref in layers:
            def corr(a: int, b: int, ref: fs.layers.LayerRef = ref) -> float:
                if a == 0 or b == 0:
                    return sum(rho(r, ve[ref][max(a, b) - 1]) for r in vr[ref]) / 2
                return rho(ve[ref][a - 1], ve[ref][b - 1])

            def to_random(x: torch.Tensor, j: int, ref: fs.layers.LayerRef = ref) -> float:
                return sum(rho(x, r) for r in vr[ref]) / 2 if j == 0 else rho(x, ve[ref][j - 1])

            others = [j for j in range(6) if j != i]
            own = sum(corr(i, j) for j in others) / 5
            low = sum(to_random(x, j) for x in vx[ref] for j in others) / (7 * 5)
            total += own - low
        return total / len(layers)

    assert found.closeness == pytest.approx(closeness(0), abs=1e-9)
    assert found.null == pytest.approx([closeness(i) for i in range(1, 6)], abs=1e-9)
    assert found.p_value == (1 + sum(v <= closeness(0) for v in found.null)) / 6 and found.false_alarm == 0.0


def test_the_path_flags_false_alarm_rate_on_images_that_take_the_natural_path_is_the_nominal_one():
    """A "render" that is one more draw of the exemplars' distribution is flagged floor(alpha (n + 1)) / (n + 1) of
    the time (1/11 with 10 exemplars), within three standard errors over 1,100 seeded trials."""
    g = torch.Generator().manual_seed(0)
    layers = [fs.layers.LayerRef("a"), fs.layers.LayerRef("b")]
    flagged, trials = 0, 1100
    for _ in range(trials):
        unit = {ref: torch.randn(16, generator=g) for ref in layers}  # this unit's natural path, per layer
        draws = {ref: unit[ref] + torch.randn(11, 16, generator=g) for ref in layers}
        pick = int(torch.randint(11, (1,), generator=g))  # which of the 11 exchangeable images plays the render
        rest = [i for i in range(11) if i != pick]
        found = path_similarity({r: draws[r][pick:pick + 1] for r in layers}, {r: draws[r][rest] for r in layers},
                                {r: torch.randn(8, 16, generator=g) for r in layers}, 1.0)
        flagged += "another-path" in found.flags
        assert found.false_alarm == pytest.approx(1 / 11)
    rate, nominal = flagged / trials, 1 / 11
    assert abs(rate - nominal) < 3 * (nominal * (1 - nominal) / trials) ** 0.5, rate


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


def test_the_fair_task_with_renders_of_both_signs_equals_a_brute_force_computation():
    g = torch.Generator().manual_seed(4)
    features, values = torch.randn(60, 5, generator=g), torch.randn(60, generator=g)
    up, down = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    found = machine_afc(features, values, "renders", renders=up, negatives=down, tasks=40, pool=12, seed=7)
    order = torch.argsort(values.double(), descending=True, stable=True)
    strong, weak = order[:12], order.flip(0)[:12]
    draws, right = torch.Generator().manual_seed(7), 0.0
    cosine = torch.nn.functional.cosine_similarity
    for _ in range(40):  # the same draws: a permutation of each pool, its first image the query
        q_strong = int(strong[torch.randperm(12, generator=draws)][0])
        q_weak = int(weak[torch.randperm(12, generator=draws)][0])
        a, b = ((cosine(features[q][None], up).mean() - cosine(features[q][None], down).mean()).item()
                for q in (q_strong, q_weak))
        right += 1.0 if a > b else 0.5 if a == b else 0.0
    assert found.score == pytest.approx(right / 40) and (found.signs, found.k) == ("both", 3)
    one_sign = machine_afc(features, values, "renders", renders=up, tasks=40, pool=12, seed=7)
    assert one_sign.signs == "max" and AFCScore.from_dict(one_sign.to_dict()) == one_sign
    old = {"references": "renders", "score": 0.5, "tasks": 200, "stderr": 0.03}  # a record from before the fair task
    assert (AFCScore.from_dict(old).signs, AFCScore.from_dict(old).k) == ("max", 9)


def test_a_judge_standardizes_over_the_dataset_and_weighs_its_groups_equally():
    judge = Judge("two", lambda images: images, (2, 1))
    data = torch.tensor([[0.0, 10.0, 5.0], [2.0, 30.0, 7.0], [4.0, 20.0, 6.0]])
    standard = Standardized.fit(judge, data)
    out = standard(data)
    assert torch.allclose(out.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    # each feature's spread 1, times its group's weight: 1/sqrt(2 * 2) for the pair, 1/sqrt(1 * 2) for the single
    assert torch.allclose(out.std(0), torch.tensor([0.5, 0.5, 2 ** -0.5], dtype=torch.float64))
    with pytest.raises(fs.InvalidOptionError, match="Unknown judge 'nope'.*Choices: colour-texture, matched, pooled"):
        judge_for("nope", colour_independent(), fooling(), fs.layers.resolve_layer(fooling(), "conv3"))


@pytest.mark.parametrize("name", ["pooled", "colour-texture"])
def test_each_judges_random_control_is_at_chance_and_a_unit_of_known_colour_is_read(name):
    model, images = fooling(), smooth_photos(120)
    found = trust_units(model, "conv3", [0, 1, 2, 3], images, colour_independent(), judge=name, tasks=300)
    for record in found:
        control = record.score("random")
        assert record.judge == name and control is not None
        assert abs(control.score - 0.5) < 3 * max(control.stderr, 0.03), control
    colour_unit = found[0].score("exemplars")  # unit 0 reads the colour: both judges see colour
    assert colour_unit is not None and colour_unit.score > 0.6, colour_unit


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


def _exchangeable(seed, k=3, pool=30, n=200, d=16, signal=0.08):
    """Features whose unit reads a direction weakly, and k maximizing and k minimizing "renders" that are images of
    the unit's two pools taken out of the dataset: exchangeable with the exemplars by construction."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(n + 2 * k, generator=g)
    features = values[:, None] * signal * torch.randn(d, generator=g)[None] + torch.randn(n + 2 * k, d, generator=g)
    order = torch.argsort(values, descending=True)
    up = order[:pool + k][torch.randperm(pool + k, generator=g)[:k]]
    down = order.flip(0)[:pool + k][torch.randperm(pool + k, generator=g)[:k]]
    keep = torch.ones(n + 2 * k, dtype=torch.bool)
    keep[up], keep[down] = False, False
    return features[keep], values[keep], features[up], features[down]


def test_the_render_tests_false_alarm_rate_on_renders_exchangeable_with_exemplars_is_the_nominal_one():
    """Renders that are more of the unit's own images are flagged floor(alpha (draws + 1)) / (draws + 1) of the time
    (0.1 with 19 draws), within three standard errors over 1,000 seeded trials."""
    trials, flagged = 1000, 0
    for seed in range(trials):
        features, values, up, down = _exchangeable(seed)
        found = render_test(features, values, up, down, draws=19, seed=seed, share=1.0)
        flagged += found.flagged
        assert found.false_alarm == pytest.approx(0.1) and len(found.null) == 19
    assert abs(flagged / trials - 0.1) < 3 * (0.1 * 0.9 / trials) ** 0.5, flagged / trials


def test_the_render_test_scores_every_query_pair_and_flags_renders_pointing_the_wrong_way():
    features, values, up, down = _exchangeable(3, signal=0.5)
    found = render_test(features, values, up, down, pool=12, draws=9, seed=2)
    order = torch.argsort(values.double(), descending=True, stable=True)
    strong, weak = order[:12], order.flip(0)[:12]
    cosine = torch.nn.functional.cosine_similarity

    def similarity(q: int) -> float:
        return float(cosine(features[q][None], up).mean() - cosine(features[q][None], down).mean())

    right = sum(1.0 if similarity(a) > similarity(b) else 0.5 if similarity(a) == similarity(b) else 0.0
                for a in strong.tolist() for b in weak.tolist())
    assert found.score == pytest.approx(right / 144) and found.score > 0.8
    assert not found.flagged and found.p_value == (1 + sum(v <= found.score for v in found.null)) / 10
    swapped = render_test(features, values, down, up, pool=12, draws=9, seed=2)  # renders of the other unit
    assert swapped.score < 0.2 and swapped.p_value == pytest.approx(0.1) and swapped.flagged
    at_chance = [render_test(features, values, a, b, pool=12, draws=9, seed=2, share=0.0) for a, b in ((up, down),
                                                                                                      (down, up))]
    assert at_chance[0].null == found.null and [t.p_value for t in at_chance] == [1.0, pytest.approx(0.1)]
    one_sign = render_test(features, values, up, pool=12, draws=9, seed=2)
    assert one_sign.score > 0.8 and not one_sign.flagged


def test_the_judges_features_are_kept_in_the_cache_and_read_back_for_the_same_dataset_only(tmp_path):
    from filterscope.trust.unit import unit_maxima
    from filterscope.zoo.model import coerce_model

    model = coerce_model(fooling())
    ref = fs.layers.resolve_layer(model, "conv3")
    photos = smooth_photos(40)
    loads: list[int] = []

    def data(dataset: str) -> TrustData:
        def load(indices):
            loads.append(len(indices))
            return photos[list(indices)]
        return TrustData(model, ref, unit_maxima(model, ref, photos), load, colour_independent(), cache=tmp_path,
                         dataset=dataset)

    first = data("photos-a").judged()[1]
    assert sum(loads) == 40 and len(list(tmp_path.glob("*.npy"))) == 1
    again = data("photos-a").judged()[1]
    assert sum(loads) == 40 and torch.allclose(again, first, atol=1e-6)  # read back: no image loaded
    data("photos-b").judged()
    assert sum(loads) == 80 and len(list(tmp_path.glob("*.npy"))) == 2  # another dataset: computed and kept apart


def test_a_trust_record_round_trips_through_json(fooled):
    import json

    for record in fooled:
        assert UnitTrust.from_dict(json.loads(record.to_json())) == record


SPEC = f"{Path(__file__).parents[1] / 'helpers' / 'models.py'}:fooling"


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
    assert "2-AFC (efficientnet_lite2, matched judge; chance 0.50): renders (maximizing only, 1) " in result.output
    assert "against 10 held-out exemplars (flagged at p <= 0.1: a false-alarm rate of 9% on natural" in result.output
    assert "renders against 99 sets of as many of its own exemplars: " in result.output
    assert "(flagged at p <= 0.1: a false-alarm rate of 10% for renders as informative as exemplars)" in result.output
    records = [UnitTrust.from_dict(r) for r in json.loads((tmp_path / "t.json").read_text())]
    assert [r.unit for r in records] == [0, 1] and all(r.images == 40 for r in records)
    assert records[0].score("exemplars").tasks == 40  # type: ignore[union-attr]


@pytest.mark.integration
def test_an_atlas_build_records_trust_and_the_cli_reads_it(tmp_path, photo_folder):
    summary = fs.build_atlas(tmp_path / "a", fooling(), "conv3", units=[0, 1], recipes=[RECIPE], dataset=photo_folder,
                             scores=False, circuits=False)
    assert summary.trust == 2
    with fs.Atlas(tmp_path / "a") as atlas:
        records = atlas.store.unit_trust(atlas.layer("conv3").id)
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
    kept = list((tmp_path / "a" / "judged").glob("*.npy"))  # the judge's features of the dataset, for later builds
    assert len(kept) == 1 and np.load(kept[0]).shape[0] == len(list(photo_folder.iterdir()))


@pytest.mark.parametrize("args, message", [
    ([], "Give visualization PNGs with --images"),
    (["--atlas", "nowhere"], "--atlas needs --layer"),
    (["--atlas", "nowhere", "--judge", "pooled"], "--judge and --images go with PNGs"),
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


def test_a_trust_record_is_what_the_microscope_schema_says(fooled):
    from filterscope.microscope.schemas import Trust

    for record in fooled:  # extra="forbid": a field the record writes and the schema lacks fails, and the reverse
        written = json.loads(record.to_json())
        assert Trust.model_validate(written).model_dump(mode="json") == written
