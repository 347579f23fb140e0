"""Activation atlases: samples, attribution, layout, cells, whitening, the icons' objective, the build and its
resumption, the command, the reading API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import filterscope as fs
from filterscope.atlas import LocalExecutor
from filterscope.atlas.scan import PassShard, scan_shard
from filterscope.atlas.stages import StageReport
from filterscope.atlas.stages import maps as atlas_maps
from filterscope.atlas.tasks import TaskFailure
from filterscope.cli import app
from filterscope.engine.objectives import DirectionNeuron
from filterscope.layers import OUTPUT, resolve_layer
from filterscope.maps import MapSettings, bin_cells, lay_out, normalize_layout, sample_places, second_moment, whitening
from filterscope.maps.samples import SampleSpec, Taps, class_gradients, collect
from filterscope.runtime import Forward, Runtime

from ..helpers.maps import SMALL, build
from ..helpers.models import color_classes, smooth_photos

SPEC = f"{Path(__file__).parents[1] / 'helpers' / 'models.py'}:color_classes"


def clusters(k: int = 4, per: int = 60, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:k] * 5 + 0.5
    labels = np.repeat(np.arange(k), per)
    return (centres[labels] + rng.normal(0, 0.1, (k * per, dim))).astype(np.float32), labels


def test_random_positions_are_seeded_per_image_and_away_from_the_border():
    a = sample_places([3, 7, 9], (7, 7), "random", seed=1)
    assert a.tolist() == sample_places([9, 3, 7], (7, 7), "random", seed=1)[[1, 2, 0]].tolist()  # order-free
    assert a[:, 0].tolist() == [3, 7, 9] and ((a[:, 1:] >= 1) & (a[:, 1:] <= 5)).all()
    many = sample_places(range(200), (7, 7), "random", seed=1)
    assert len({tuple(p) for p in many[:, 1:]}) > 15  # spread over the interior, not one place
    assert sample_places([0], (2, 3), "all", 0).tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 0], [0, 1, 1],
                                                             [0, 1, 2]]


def test_samples_and_their_attribution_equal_a_hand_computation():
    model = color_classes()
    images = smooth_photos(6)
    net = model.module
    ref = resolve_layer(model, "conv2")
    with torch.no_grad():
        act = torch.relu(net.conv2(torch.relu(net.conv1(images))))  # the ReLU after conv2 is applied in forward
        raw = net.conv2(torch.relu(net.conv1(images)))
        logits = net.fc(act.mean(dim=(2, 3)))
    out = resolve_layer(model, OUTPUT)
    with torch.no_grad(), Forward(model, [ref, out]) as forward, Taps(model, [ref]) as taps:
        with torch.enable_grad():
            acts = forward(images)
            top, grads = class_gradients(acts[out], [taps.tensors[ref]], 3)
        rows = collect(acts[ref], list(range(6)), SampleSpec("random", 0, 3), top, grads[0])
    assert torch.equal(top, logits.topk(3, dim=1).indices)
    for m, (image, y, x) in enumerate(rows.places):
        assert np.allclose(rows.vectors[m], raw[image, :, y, x].numpy(), atol=1e-5)
        for r in range(3):
            k = int(top[image, r])
            # logit = W relu(a).mean + b: d/da[c,y,x] = W[k,c] * (a > 0) / (H W)
            grad = net.fc.weight.detach()[k] * (raw[image, :, y, x] > 0) / (32 * 32)
            assert rows.classes[m, r] == k
            assert rows.attributions[m, r] == pytest.approx(float((raw[image, :, y, x] * grad).sum()), abs=1e-6)


@pytest.mark.integration
@pytest.mark.numerics
def test_the_layout_is_reproducible_with_a_seed_and_the_cells_recover_clusters():
    vectors, labels = clusters()
    a, b = lay_out(vectors, n_neighbors=15, seed=3), lay_out(vectors, n_neighbors=15, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, lay_out(vectors, n_neighbors=15, seed=4))
    coords = normalize_layout(a)
    assert coords.min() >= 0 and coords.max() <= 1
    assignment, cells = bin_cells(coords, vectors, grid=6, min_count=3)
    purity = [np.bincount(labels[c.members]).max() / c.count for c in cells]
    assert min(purity) >= 0.95  # a cell holds one cluster
    assert {int(np.bincount(labels[c.members]).argmax()) for c in cells} == {0, 1, 2, 3}  # every cluster has cells
    for c in cells:  # the mean is the members' mean, and each member knows its cell
        assert np.allclose(c.mean, vectors[c.members].mean(axis=0), atol=1e-5)
        assert (assignment[c.members] == c.row * 6 + c.col).all()
    dropped = assignment == -1
    assert all(c.count > 3 for c in cells) and dropped.sum() == len(vectors) - sum(c.count for c in cells)


@pytest.mark.integration
def test_tsne_is_the_alternative_layout():
    vectors, _ = clusters(k=3, per=30)
    coords = lay_out(vectors, method="tsne", seed=0)
    assert coords.shape == (90, 2) and np.array_equal(coords, lay_out(vectors, method="tsne", seed=0))
    with pytest.raises(fs.FilterscopeError, match="Unknown layout 'pca': use umap, tsne"):
        lay_out(vectors, method="pca")


def test_whitening_and_the_direction_objective_equal_a_hand_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    x[:, 3] = 0  # a dead unit: singular without the ridge
    moment = second_moment(x, chunk=7)
    assert np.allclose(moment, x.T @ x / 50)
    inverse = whitening(moment, ridge=0.1)
    assert np.allclose(inverse @ (moment + 0.1 * np.mean(np.diag(moment)) * np.eye(4)), np.eye(4))
    act = torch.zeros(2, 3, 3, 5)
    act[0, :, 1, 2] = torch.tensor([3.0, 4.0, 0.0])   # at the centre (1, 2)
    act[1, :, 1, 2] = torch.tensor([0.0, 1.0, 1.0])
    objective = DirectionNeuron("L", (1.0, 0.0, 0.0), power=2.0)
    values = objective({"L": act})
    # image 0: dot 3, cos 3/5 → 3 * 0.36; image 1: dot 0, cos 0 → clamped to 0.1: 0 * 0.01
    assert values.tolist() == pytest.approx([3 * 0.6 ** 2, 0.0])
    shifted = DirectionNeuron("L", (0.0, 2.0, 0.0), power=1.0, y=1, x=2)({"L": act})
    assert shifted.tolist() == pytest.approx([4 * 0.8, 1 * max(0.1, 1 / 2 ** 0.5)])
    # the icons' form: the dot with a (whitened) vector, the cosine with another (the cell's mean)
    mixed = DirectionNeuron("L", (1.0, 0.0, 0.0), power=2.0, cosine_with=(0.0, 3.0, 0.0))({"L": act})
    assert mixed.tolist() == pytest.approx([3 * 0.8 ** 2, 0.0])


def cli_atlas(folder, photos):
    """An atlas with an exemplar pass, built by the command (so that it records the model's source)."""
    made = CliRunner().invoke(app, ["atlas", "build", str(folder), "-m", SPEC, "-l", "conv2", "--recipe", "none",
                                    "--dataset", str(photos), "--no-circuits", "--no-trust", "-q"])
    assert made.exit_code == 0, made.output


class Interrupted(LocalExecutor):
    """Stops (as a kill would) after the first icon task's outcome was recorded."""

    def map(self, function, model, tasks, **kwargs):
        for i, pair in enumerate(super().map(function, model, tasks, **kwargs)):
            if function.__name__ == "icon_task" and i == 1:
                raise KeyboardInterrupt
            yield pair


@pytest.mark.integration
@pytest.mark.numerics
def test_a_map_build_records_cells_and_icons_that_raise_their_objective(tmp_path, photo_folder):
    summary = build(tmp_path / "a", photo_folder)
    assert summary.maps == 1 and summary.icons > 0
    with fs.Atlas(tmp_path / "a") as atlas:
        found = atlas.map("conv2")
    assert found.trustworthiness is not None and found.trustworthiness > 0.8
    assert len(found.cells) == summary.icons and sum(c.count for c in found.cells) <= 60
    for c in found.cells:
        assert c.icon is not None and c.icon.exists() and c.final > c.initial  # the icon raised its objective
        assert c.cosine is not None and c.cosine > 0.5
        assert c.label_name in color_classes().categories and 0 < c.label_share <= 1
        members = found.members(c)
        assert len(members) == c.count and all(Path(p).parent == photo_folder for p, _, _ in members)
    figure = found.figure(cell=40)
    assert figure.size == (160, 160)
    again = build(tmp_path / "a", photo_folder)
    assert again.maps == 0 and again.icons == 0 and again.passes == 0  # laid out once, rendered once


def atlas_cells(folder: Path) -> list:
    with fs.Atlas(folder) as atlas:
        return atlas.map("conv2").cells


@pytest.mark.integration
@pytest.mark.numerics
def test_a_killed_map_build_resumes_without_redoing_icons(tmp_path, photo_folder, monkeypatch):
    # two icons a task, so the interruption falls between tasks however many cells float rounding lays out
    # (7 on one CPU, fewer than the 8 icons of one default task)
    monkeypatch.setattr(atlas_maps, "ICONS_PER_TASK", 2)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path / "a", photo_folder, executor=Interrupted())
    cells = atlas_cells(tmp_path / "a")
    done = [c for c in cells if c.icon is not None]
    assert 0 < len(done) < len(cells)
    stamps = {c.icon: c.icon.stat().st_mtime_ns for c in done}
    resumed = build(tmp_path / "a", photo_folder)
    with fs.Atlas(tmp_path / "a") as atlas:
        cells = atlas.map("conv2").cells
    assert resumed.maps == 0 and resumed.icons == len(cells) - len(done)
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items())  # not rendered again


class FirstIconTaskFails(LocalExecutor):
    """Gives up on the first icon task, as a Dask executor does with a task that raised on its worker."""

    def map(self, function, model, tasks, **kwargs):
        for i, (task, outcome) in enumerate(super().map(function, model, tasks, **kwargs)):
            yield task, TaskFailure("RuntimeError: out of memory") if function.__name__ == "icon_task" and i == 0 \
                else outcome


@pytest.mark.integration
def test_a_failed_icon_task_is_reported_and_counted_and_the_next_build_renders_its_icons(tmp_path, photo_folder,
                                                                                        monkeypatch):
    monkeypatch.setattr(atlas_maps, "ICONS_PER_TASK", 2)
    messages: list[str] = []

    class Progress(fs.atlas.BuildProgress):
        def message(self, text: str, *, warning: bool = False) -> None:
            messages.append(text)

    summary = build(tmp_path / "a", photo_folder, executor=FirstIconTaskFails(), progress=Progress())
    cells = atlas_cells(tmp_path / "a")
    assert len(summary.icon_failures) == 1
    assert summary.icon_failures[0].endswith("RuntimeError: out of memory (rendered again by the next build)")
    assert summary.icons == len(cells) - 2 == sum(c.icon is not None for c in cells)
    assert [m for m in messages if "failed" in m] == [f"map-icons failed: {summary.icon_failures[0]}"]
    assert summary.failures == [f"map-icons: {summary.icon_failures[0]}"]
    status = CliRunner().invoke(app, ["atlas", "status", str(tmp_path / "a"), "--json"])
    assert json.loads(status.output)["maps"][0]["failed_icons"] == 2  # recorded, so atlas status counts them
    again = build(tmp_path / "a", photo_folder)
    assert again.icons == 2 and not again.icon_failures
    assert all(c.icon is not None for c in atlas_cells(tmp_path / "a"))


def test_the_command_line_exits_1_naming_a_failed_icon_task():
    from filterscope.cli.atlas import check_icons

    check_icons(fs.atlas.BuildSummary())  # none failed: nothing to say
    with pytest.raises(fs.AtlasError, match=r"^2 map icon task\(s\) failed \(conv2 map icons 0-1: RuntimeError: "
                                            r"boom\); the same command renders their icons again$"):
        check_icons(fs.atlas.BuildSummary(
            {"map-icons": StageReport(failed=["conv2 map icons 0-1: RuntimeError: boom", "b: c"])}))


def attributed(atlas: fs.Atlas) -> tuple[np.ndarray, np.ndarray]:
    """The top classes and their attributions of the random-position samples of the atlas's conv2 pass."""
    samples = atlas.store.map_samples(atlas.store.latest_pass(atlas.layer("conv2").id).id, "random", 0)
    return np.load(atlas.path / samples.classes_file), np.load(atlas.path / samples.attributions_file)


@pytest.mark.integration
def test_a_class_atlas_keeps_the_samples_of_its_class(tmp_path, photo_folder):
    build(tmp_path / "a", photo_folder)
    with fs.Atlas(tmp_path / "a") as atlas:
        everything = atlas.map("conv2")
    labels = [c.label for c in everything.cells]
    chosen = max(set(labels), key=labels.count)
    one = MapSettings(grid=3, min_count=1, icon_size=32, n_neighbors=5, label_class=chosen)
    build(tmp_path / "a", photo_folder, one)
    with fs.Atlas(tmp_path / "a") as atlas:
        found = atlas.map("conv2", settings=one)
        classes, attributions = attributed(atlas)
    top = classes[np.arange(len(classes)), attributions.argmax(axis=1)]
    kept = np.isfinite(found.coords[:, 0])
    assert kept.sum() == (top == chosen).sum() and (top[kept] == chosen).all()
    assert all(c.label == chosen and c.label_share == 1.0 for c in found.cells)


@pytest.mark.integration
def test_the_map_command_builds_and_draws_a_map(tmp_path, photo_folder):
    cli_atlas(tmp_path / "a", photo_folder)
    result = CliRunner().invoke(app, ["atlas", "map", str(tmp_path / "a"), "-l", "conv2", "--grid", "4",
                                      "--min-count", "2", "--icon-size", "32", "--neighbors", "10", "-q",
                                      "-o", str(tmp_path / "map.png")])
    assert result.exit_code == 0, result.output
    assert "conv2: " in result.output and "cells of 4x4 over 60 samples" in result.output
    with Image.open(tmp_path / "map.png") as figure:
        assert figure.size == (4 * 72, 4 * 72)
    status = CliRunner().invoke(app, ["atlas", "status", str(tmp_path / "a")])
    assert status.exit_code == 0 and "activation atlas colorclasses conv2: " in status.output, status.output
    assert "cells of 4x4 (random positions), trustworthiness" in status.output
    by_name = CliRunner().invoke(app, ["atlas", "map", str(tmp_path / "a"), "-l", "conv2", "--class", "purple", "-q"])
    assert by_name.exit_code == 1 and "--class 'purple' names no class" in by_name.output
    assert "Traceback" not in by_name.output


@pytest.mark.parametrize("args, message", [
    (["--positions", "some"], "Unknown --positions 'some': use random, all"),
    (["--compare", "1"], "--compare takes two classes A,B"),
    (["--class", "9"], "--class 9 is out of range: the model has 5 classes (0-4)"),
    (["--layout", "pca"], "layout must be one of umap, tsne"),
    (["--grid", "0"], "grid must be a whole number of at least 1"),
])
@pytest.mark.integration
def test_bad_map_options_are_one_line_errors(tmp_path, photo_folder, args, message):
    cli_atlas(tmp_path / "a", photo_folder)
    result = CliRunner().invoke(app, ["atlas", "map", str(tmp_path / "a"), "-l", "conv2", "-q", *args])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_a_map_needs_an_exemplar_pass(tmp_path):
    fs.build_atlas(tmp_path / "a", color_classes(), "conv2", recipes=[fs.get_recipe("filterscope").replace(
        size=32, steps=2)], circuits=False, trust=False)
    with pytest.raises(fs.FilterscopeError, match="The map of conv2 needs an exemplar pass over a dataset"):
        build(tmp_path / "a", None)


@pytest.mark.integration
def test_samples_missing_from_a_finished_pass_are_collected_in_a_pass_of_their_own(tmp_path, photo_folder):
    fs.build_atlas(tmp_path / "a", color_classes(), "conv2", recipes=(), dataset=photo_folder, circuits=False,
                   trust=False)
    messages = []

    class Progress(fs.atlas.BuildProgress):
        def message(self, text, *, warning=False):
            messages.append(text)

    summary = fs.build_atlas(tmp_path / "a", color_classes(), "conv2", recipes=(), circuits=False, trust=False,
                             maps=SMALL, progress=Progress())
    assert summary.passes == 0 and summary.maps == 1
    assert any("collecting them in a pass of their own" in m for m in messages)
    in_pass = build(tmp_path / "b", photo_folder)
    with fs.Atlas(tmp_path / "a") as a, fs.Atlas(tmp_path / "b") as b:
        first, second = a.map("conv2"), b.map("conv2")
    assert np.array_equal(first.places, second.places)  # the same samples either way
    assert in_pass.maps == 1 and [c.count for c in first.cells] == [c.count for c in second.cells]


def test_a_pass_shard_collects_samples_at_every_position(tmp_path, photo_folder):
    model = color_classes()
    items = tuple((i, str(p)) for i, p in enumerate(sorted(photo_folder.iterdir())[:3]))
    outcome = scan_shard(model, PassShard(("conv2",), (6,), items, 1, "crop", Runtime(), (SampleSpec("all", 0, 2),)))
    rows = outcome.samples[0]
    assert rows.places.shape == (3 * 32 * 32, 3) and rows.vectors.shape == (3 * 32 * 32, 6)
    assert rows.classes.shape == (3 * 32 * 32, 2)


def test_forward_mode_attribution_to_every_class_equals_a_hand_computation(photo_folder):
    model = color_classes()
    net = model.module
    paths = sorted(photo_folder.iterdir())[:5]
    items = tuple((i, str(p)) for i, p in enumerate(paths))
    outcome = scan_shard(model, PassShard(("conv2",), (6,), items, 1, "crop", Runtime(), (SampleSpec("random", 0, 3),)))
    rows = outcome.samples[0]
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255)
                          .permute(2, 0, 1) for p in paths])
    with torch.no_grad():
        raw = net.conv2(torch.relu(net.conv1(images)))
    for m, (image, y, x) in enumerate(rows.places):
        a = raw[image, :, y, x]
        every = net.fc.weight.detach() @ (a * (a > 0)) / (32 * 32)  # each class's attribution at (y, x)
        values, best = every.topk(3)
        assert rows.classes[m].tolist() == best.tolist()
        assert np.allclose(rows.attributions[m], values.numpy(), atol=1e-6)


@pytest.mark.integration
def test_a_two_class_comparison_orders_the_samples_by_their_attribution_difference(tmp_path, photo_folder):
    compare = MapSettings(grid=4, min_count=1, icon_size=32, n_neighbors=10, compare=(0, 1))
    build(tmp_path / "a", photo_folder, compare)
    with fs.Atlas(tmp_path / "a") as atlas:
        found = atlas.map("conv2", settings=compare)
        classes, attributions = attributed(atlas)
    difference = (np.where(classes == 0, attributions, 0).sum(axis=1) - np.where(classes == 1, attributions, 0)
                  .sum(axis=1))
    kept = np.isfinite(found.coords[:, 0])
    assert kept.all()  # five classes, five kept per sample: every sample has both
    order = np.argsort(found.coords[:, 0], kind="stable")
    assert (np.diff(difference[order]) >= -1e-9).all()  # x is the rank of the difference
    assert found.trustworthiness is None and found.cells


def test_map_settings_round_trip_as_an_atlas_stores_them_and_old_atlases_get_defaults():
    settings = MapSettings(grid=5, compare=(3, 7), recipe="lucid", min_dist=0.2)
    stored = json.loads(json.dumps(settings.to_dict(), sort_keys=True))
    assert stored["compare"] == [3, 7] and MapSettings.from_dict(stored) == settings
    older = {k: v for k, v in stored.items() if k not in ("max_samples", "power")}  # written before those existed
    assert MapSettings.from_dict({**older, "retired": 1}) == settings
    with pytest.raises(fs.InvalidOptionError, match="grid must be a whole number of at least 1"):
        MapSettings.from_dict({**stored, "grid": 0})
