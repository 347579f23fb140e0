"""Model diff: CKA in closed form and against brute force, unit matching on planted permutations, a network against
its permuted and rescaled copy, and the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import filterscope as fs
from filterscope.cli import app
from filterscope.compare import ModelDiff, cka, gram, match_units
from filterscope.compare.cka import hsic, image_features
from filterscope.compare.controls import permuted_copy

from ..helpers.models import save_photos, small_net, smooth_photos

SPEC = f"{Path(__file__).parents[1] / 'helpers' / 'models.py'}:small_net"


def _brute_unbiased_hsic(k: torch.Tensor, l: torch.Tensor) -> float:  # noqa: E741
    """Song et al. (2012), eq. 5, term by term over index tuples."""
    n = k.shape[0]
    k, l = k.clone(), l.clone()  # noqa: E741
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    trace = sum(float(k[i, j] * l[j, i]) for i in range(n) for j in range(n))
    ones = float(k.sum()) * float(l.sum()) / ((n - 1) * (n - 2))
    cross = 2 / (n - 2) * sum(float(k[i, j] * l[j, m]) for i in range(n) for j in range(n) for m in range(n))
    return (trace + ones - cross) / (n * (n - 3))


def test_hsic_equals_its_definitions():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 4, generator=g), torch.randn(9, 3, generator=g)
    k, l = gram(x), gram(y)  # noqa: E741
    assert hsic(k, l) == pytest.approx(_brute_unbiased_hsic(k, l), rel=1e-9)
    h = torch.eye(9, dtype=torch.float64) - 1 / 9
    assert hsic(k, l, debiased=False) == pytest.approx(float(torch.trace(k @ h @ l @ h)) / 64, rel=1e-9)


@pytest.mark.parametrize("debiased", [True, False])
def test_cka_is_one_for_a_rotated_rescaled_copy_and_near_zero_for_independent_features(debiased):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 16, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    same = (x.double() @ rotation) * 3.0  # an orthogonal transform and an isotropic scale
    assert cka(gram(x, standardize=False), gram(same, standardize=False), debiased=debiased) == pytest.approx(1.0)
    shuffled = x[:, torch.randperm(16, generator=g)] * torch.rand(16, generator=g) * 5  # units reordered, rescaled
    assert cka(gram(x), gram(shuffled), debiased=debiased) == pytest.approx(1.0)
    independent = cka(gram(x), gram(torch.randn(200, 16, generator=g)), debiased=debiased)
    assert abs(independent) < (0.03 if debiased else 0.15), independent


def test_debiased_cka_stays_near_zero_where_the_biased_one_is_inflated_by_width():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(30, 400, generator=g), torch.randn(30, 400, generator=g)  # wide against few images
    assert cka(gram(x), gram(y), debiased=False) > 0.5
    assert abs(cka(gram(x), gram(y))) < 0.1


def test_image_features_pool_to_a_grid():
    act = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert image_features(act, 2).tolist() == [[2.5, 4.5, 10.5, 12.5]]
    assert image_features(act, 1).tolist() == [[7.5]]


def test_matching_recovers_a_planted_permutation_and_the_null_rejects_unrelated_units():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(60, 12, 5, 5, generator=g)
    order = torch.randperm(12, generator=g)
    b = torch.cat([a[:, order] * 2.0 + 0.1 * torch.randn(60, 12, 5, 5, generator=g),
                   torch.randn(60, 4, 5, 5, generator=g)], dim=1)  # B: A's units moved, and 4 of its own
    found = match_units(a, b)
    where = order.argsort()
    assert all(m.b == int(where[m.a]) and m.buddies for m in found.matches)
    assert found.share == 1.0 and found.unmatched("b") == [12, 13, 14, 15]
    unrelated = match_units(a, torch.randn(60, 12, 5, 5, generator=g))
    assert unrelated.share < 0.1 and all(m.correlation < 0.2 for m in unrelated.matches)


def test_a_network_and_its_permuted_rescaled_copy_compute_the_same_function_and_the_diff_finds_it():
    net = small_net()
    moved = permuted_copy(net, "features.2", "features.4", seed=5)
    photos = smooth_photos(24)
    with torch.no_grad():
        assert torch.allclose(net.module(photos), moved.model.module(photos), atol=1e-5)
    report = fs.diff(net, moved.model, photos, pairs=["features.3"])
    assert [round(v, 6) for _, v in report.same_names()] == [1.0] * len(report.layers_a)
    match = report.match("features.3")
    assert match is not None and all(m.b == int(moved.permutation[m.a]) for m in match.matches)
    assert ModelDiff.from_dict(json.loads(report.to_json())) == report


@pytest.mark.integration
def test_lite0_against_itself_with_blocks_15_permuted_and_rescaled():
    lite0 = fs.load_model("efficientnet_lite0")
    moved = permuted_copy(lite0, "_blocks.15._project_conv", "_conv_head", norm="_blocks.15._bn2", seed=1)
    photos = smooth_photos(12, size=lite0.preprocessing.input_size)
    report = fs.diff(lite0, moved.model, photos, layers_a=["_blocks.14", "_blocks.15"],
                     layers_b=["_blocks.14", "_blocks.15"], pairs=["_blocks.15"])
    assert [round(v, 3) for _, v in report.same_names()] == [1.0, 1.0]
    match = report.match("_blocks.15")
    assert match is not None and len(match.matches) == 320
    assert all(m.b == int(moved.permutation[m.a]) for m in match.matches)


def test_the_diff_command_writes_its_report_figure_and_matches(tmp_path):
    photos = save_photos(tmp_path / "photos", 12)
    result = CliRunner().invoke(app, ["diff", SPEC, SPEC, "--dataset", str(photos), "-l", "features.3",
                                      "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    assert "features.3 ↔ features.3: 16 of 16 units of A matched" in result.output
    report = ModelDiff.from_dict(json.loads((tmp_path / "out" / "diff.json").read_text()))
    assert report.images == 12 and (tmp_path / "out" / "diff.png").stat().st_size > 0
    rows = (tmp_path / "out" / "matches-features.3.csv").read_text().splitlines()
    assert rows[0] == "unit_a,unit_b,correlation,buddies,matched" and len(rows) == 17


@pytest.mark.parametrize("args, message", [
    (["-l", "a=b=c"], "expected NAME (in both networks) or NAME_A=NAME_B"),
    (["-l", "features.3="], "with both names"),
    (["-l", "nope"], "nope"),
    (["--grid", "0"], "--grid must be at least 1"),
    (["--layers-a", "features.1,,features.3"], "empty element"),
])
def test_diff_errors_are_one_line(tmp_path, args, message):
    photos = save_photos(tmp_path / "photos", 12)
    result = CliRunner().invoke(app, ["diff", SPEC, SPEC, "--dataset", str(photos), "-o", str(tmp_path / "out"),
                                      "-q", *args])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output, result.output


def test_diff_refuses_too_few_images(tmp_path):
    photos = save_photos(tmp_path / "photos", 4)
    result = CliRunner().invoke(app, ["diff", SPEC, SPEC, "--dataset", str(photos)])
    assert result.exit_code != 0 and "a diff needs at least 10" in result.output


def _planted(seed: int = 0, vectors: int = 6000, shared: int = 16, own: int = 6, channels: int = 24):
    """Paired vectors of A and B: ``shared`` sparse sources both read (through different random maps), and
    ``own`` sources each side alone reads."""
    g = torch.Generator().manual_seed(seed)

    def sparse(n: int, k: float) -> torch.Tensor:
        return torch.rand(vectors, n, generator=g) * (torch.rand(vectors, n, generator=g) < k / n)

    both, only_a, only_b = sparse(shared, 2), sparse(own, 1), sparse(own, 1)
    maps = [torch.randn(n, channels, generator=g) for n in (shared, own, shared, own)]
    a = both @ maps[0] + only_a @ maps[1]
    b = both @ maps[2] + only_b @ maps[3]
    return a, b, torch.arange(vectors) // 10


FAST = {"epochs": 3, "batch_size": 256, "min_steps": 300}


def test_a_crosscoder_finds_the_planted_exclusive_concepts_of_each_side():
    from filterscope.compare.crosscoder import train_crosscoder
    from filterscope.concepts.sae import SAESettings

    a, b, images = _planted()
    found = train_crosscoder(a, b, images, SAESettings(atoms=48, k=4, kind="batchtopk", seed=0, **FAST))
    assert len(found.exclusive("a")) == 6 and len(found.exclusive("b")) == 6, found.summary()
    assert found.fve_a > 0.9 and found.fve_b > 0.9
    only_b = found.exclusive("b")[0]
    assert only_b.norm_a < 0.1 * only_b.norm_b and only_b.readable is not None and only_b.readable < 0.2


def test_a_crosscoder_of_a_layer_with_itself_has_no_exclusive_concepts():
    from filterscope.compare.crosscoder import train_crosscoder
    from filterscope.concepts.sae import SAESettings

    a, _, images = _planted(1)
    found = train_crosscoder(a, a.clone(), images, SAESettings(atoms=48, k=4, kind="batchtopk", seed=3, **FAST))
    live = [lt for lt in found.latents if lt.kind != "dead"]
    assert found.count("a-only") + found.count("b-only") <= 0.01 * len(live), found.summary()


def test_the_probe_reads_a_linear_function_and_not_noise():
    from filterscope.compare.crosscoder import _probe

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2000, 8, generator=g)
    y = torch.stack([x @ torch.randn(8, generator=g), torch.randn(2000, generator=g)], dim=1)
    r2 = _probe(x[:1500], y[:1500], x[1500:], y[1500:])
    assert r2[0] > 0.99 and abs(float(r2[1])) < 0.02


def test_the_diff_command_with_concepts_shows_what_each_side_has(tmp_path):
    photos = save_photos(tmp_path / "photos", 12)
    result = CliRunner().invoke(app, ["diff", SPEC, SPEC, "--dataset", str(photos), "-l", "features.3",
                                      "--concepts", "24", "--concept-k", "4", "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    assert "concepts of features.3 ↔ features.3 (24, k=4;" in result.output
    assert "exclusive and not readable from the other: A 0, B 0" in result.output  # a network against itself
    report = ModelDiff.from_dict(json.loads((tmp_path / "out" / "diff.json").read_text()))
    assert len(report.concepts) == 1 and len(report.concepts[0].latents) == 24


def _tiny_lite():
    from filterscope.zoo.calibration import reestimate_batchnorm
    from filterscope.zoo.efficientnet import EfficientNetLite
    from filterscope.zoo.model import Preprocessing

    torch.manual_seed(0)
    net = EfficientNetLite(width=0.25, depth=0.25, dropout=0.0, num_classes=4)
    preprocessing = Preprocessing(input_size=64, resize_size=64)
    reestimate_batchnorm(net, preprocessing, _photos(64, seed=5))  # alive: its signal reaches the last block
    return fs.wrap_model(net.eval(), name="tiny-lite", preprocessing=preprocessing)


def _photos(count: int, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.interpolate(smooth_photos(count, seed), size=64, mode="bilinear", align_corners=False)


def test_a_planted_sticker_drives_its_class_and_leaves_the_photos_alone():
    from filterscope.compare.controls import paste, plant_sticker, sticker

    model = _tiny_lite()
    photos = _photos(64)
    planted = plant_sticker(model, photos, target=2, patch=sticker(16), steps=300, lr=3e-3, keep=30.0)
    # the sticker drives the class; the last block's output on the photos moves little (a random network's top-1
    # over 4 near-tied classes flips with less, so the test reads the block's output, the benchmark the top-1)
    assert planted.after >= 0.8 and planted.before <= 0.1 and planted.drift < 0.15, planted
    marked = paste(photos[1::2], planted.patch, seed=1)
    for before, after in zip(photos[1::2], marked):  # each photo holds the sticker, and is unchanged elsewhere
        ys, xs = torch.nonzero((before != after).any(0), as_tuple=True)
        y, x = int(ys.min()), int(xs.min())
        assert int(ys.max()) - y < 16 and int(xs.max()) - x < 16
        assert any(torch.equal(after[:, y0:y0 + 16, x0:x0 + 16], planted.patch)
                   for y0 in range(max(0, y - 15), y + 1) for x0 in range(max(0, x - 15), x + 1))
    with torch.no_grad():  # everything before the last block is the original network's
        a = model.module._blocks[0](model.module._relu0(model.module._bn0(model.module._conv_stem(photos[:4]))))
        b = planted.model.module._blocks[0](planted.model.module._relu0(planted.model.module._bn0(
            planted.model.module._conv_stem(photos[:4]))))
    assert torch.equal(a, b)


def test_paired_renders_show_the_best_and_the_least_matched_units_in_both_networks(tmp_path):
    from filterscope.compare.pictures import paired_renders, pairs_figure

    from ..helpers.recipes import TRUST_RECIPE

    net, other = small_net(), small_net(3)
    report = fs.diff(net, other, smooth_photos(16), pairs=["features.3"])
    match = report.match("features.3")
    assert match is not None
    pairs = paired_renders(net, other, match, count=2, recipe=TRUST_RECIPE)
    chosen = match.matches[:2] + match.matches[-2:]
    assert pairs.labels_a == tuple(f"A unit {m.a}\nr = {m.correlation:.2f}" for m in chosen)
    assert pairs.a.shape == pairs.b.shape and pairs.a.shape[:2] == (4, 3)
    with torch.no_grad():  # each picture is of its own network's unit: it drives that unit more than the other does
        def unit_of_b(images: torch.Tensor, unit: int) -> float:
            return float(other.module.features[:4](other.preprocessing.normalize(images))[0, unit].mean())

        own = [unit_of_b(pairs.b[i:i + 1], m.b) for i, m in enumerate(chosen)]
        crossed = [unit_of_b(pairs.a[i:i + 1], m.b) for i, m in enumerate(chosen)]
    assert sum(o > c for o, c in zip(own, crossed)) >= 3, (own, crossed)
    figure = pairs_figure(pairs)
    assert len(figure.axes) == 8 and figure.axes[0].get_title().startswith(f"A unit {chosen[0].a}")


def test_the_diff_command_renders_matched_pairs(tmp_path):
    photos = save_photos(tmp_path / "photos", 12)
    recipe = tmp_path / "recipe.json"
    from ..helpers.recipes import TRUST_RECIPE

    recipe.write_text(TRUST_RECIPE.to_json())
    result = CliRunner().invoke(app, ["diff", SPEC, SPEC, "--dataset", str(photos), "-l", "features.3", "--render",
                                      "1", "--recipe", str(recipe), "--concepts", "16", "--concept-k", "4",
                                      "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "pairs-features.3.png").stat().st_size > 0
    report = ModelDiff.from_dict(json.loads((tmp_path / "out" / "diff.json").read_text()))
    (split,) = report.concepts
    assert split.directions  # a network against itself shares concepts: the most used are drawn in both
    assert (tmp_path / "out" / "shared-features.3.png").stat().st_size > 0
    j, part_a, part_b = split.directions[0]
    assert len(part_a) == len(part_b) == 16 and split.latents[j].kind == "shared"
    alike = torch.nn.functional.cosine_similarity(torch.tensor(part_a), torch.tensor(part_b), dim=0)
    assert alike > 0.9, alike  # the same layer on both sides: its two halves point the same way
