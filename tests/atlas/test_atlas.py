"""Atlases: exemplars and statistics against brute force, receptive fields against the analytic formula,
the store's resume and integrity guarantees (including a real kill -9), and the command line."""

import dataclasses
import hashlib
import io
import json
import sqlite3
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import filterscope as fs
from filterscope.atlas import UnitTracker, list_dataset
from filterscope.atlas.build import BuildProgress
from filterscope.atlas.executors import LocalExecutor
from filterscope.atlas.exemplars import histograms
from filterscope.cli import app
from filterscope.errors import AtlasError, ImageError
from filterscope.files import OutputLock
from filterscope.layers import Capture

from ..helpers.atlases import ATLAS_CLI, TINY_RECIPE, conv_stack, write_images
from ..helpers.killing import kill_after_first_unit_then_resume
from ..helpers.models import PLAIN

runner = CliRunner()
# absolute pixels (reference_size None): the tiny models take 32 px


# ------------------------------------------------------------------------------ the streaming tracker
def brute_force(acts: torch.Tensor, n: int) -> dict:
    """Exemplars and statistics of ``(N, C, H, W)`` computed the obvious way, from every activation at once."""
    flat = acts.reshape(acts.shape[0], acts.shape[1], -1).double()
    maxima, argmax = flat.max(dim=2)
    minima, argmin = flat.min(dim=2)
    means = flat.mean(dim=2)
    out = {}
    for unit in range(acts.shape[1]):
        # ties by the smaller image index: a stable sort of images in index order
        top_max = np.argsort(-maxima[:, unit].numpy(), kind="stable")[:n]
        top_mean = np.argsort(-means[:, unit].numpy(), kind="stable")[:n]
        bottom = [i for i in np.argsort(minima[:, unit].numpy(), kind="stable")[:n] if minima[i, unit] < 0]
        values = flat[:, unit].reshape(-1)
        out[unit] = {
            "max": [(int(i), int(argmax[i, unit])) for i in top_max],
            "mean": [int(i) for i in top_mean],
            "min": [(int(i), int(argmin[i, unit])) for i in bottom],
            "mean_value": float(values.mean()), "std": float(values.std(unbiased=False)),
            "maximum": float(values.max()), "minimum": float(values.min()),
            "fraction_positive": float((maxima[:, unit] > 0).double().mean()),
        }
    return out


def check_tracker(tracker: UnitTracker, expected: dict) -> None:
    for unit, want in expected.items():
        assert [(i, p) for i, _, p in tracker.exemplars(unit, "max")] == want["max"]
        assert [i for i, _, _ in tracker.exemplars(unit, "mean")] == want["mean"]
        assert [(i, p) for i, _, p in tracker.exemplars(unit, "min")] == want["min"]
        stats = tracker.statistics(unit)
        assert stats["mean"] == pytest.approx(want["mean_value"], rel=1e-5, abs=1e-6)
        assert stats["std"] == pytest.approx(want["std"], rel=1e-5)
        assert stats["max"] == pytest.approx(want["maximum"])
        assert stats["min"] == pytest.approx(want["minimum"])
        assert stats["fraction_positive"] == pytest.approx(want["fraction_positive"])


def check_record(record, acts: torch.Tensor, unit: int, n: int, rel: float = 1e-5) -> None:
    """An atlas unit record (exemplars and statistics) against :func:`brute_force` over ``acts`` (N, C, H, W)."""
    want = brute_force(acts, n)[unit]
    width = acts.shape[3]
    assert [(e.image, e.y * width + e.x) for e in record.exemplars["max"]] == want["max"]
    assert [e.image for e in record.exemplars["mean"]] == want["mean"]
    assert [(e.image, e.y * width + e.x) for e in record.exemplars.get("min", [])] == want["min"]
    assert record.stats.mean == pytest.approx(want["mean_value"], rel=rel, abs=rel / 10)
    assert record.stats.std == pytest.approx(want["std"], rel=rel)
    assert record.stats.max == pytest.approx(want["maximum"], rel=rel / 10)
    assert record.stats.fraction_positive == pytest.approx(want["fraction_positive"])


def test_tracker_equals_brute_force_in_any_batching_and_merged_from_shards():
    generator = torch.Generator().manual_seed(1)
    acts = torch.randn(37, 5, 3, 4, generator=generator)
    acts[:, 2] = acts[:, 2].abs() + 0.1     # a unit that never goes negative: no bottom exemplars
    acts[4, 1] = acts[9, 1]                 # an exact tie: the smaller image index must come first
    expected = brute_force(acts, 6)
    assert expected[2]["min"] == []
    for batch in (1, 4, 37):
        tracker = UnitTracker(5, 6)
        for start in range(0, 37, batch):
            tracker.update(acts[start:start + batch], torch.arange(start, min(start + batch, 37)))
        check_tracker(tracker, expected)
    shards = [UnitTracker(5, 6) for _ in range(3)]
    for k, shard in enumerate(shards):  # every third image, merged in reverse order
        idx = torch.arange(k, 37, 3)
        shard.update(acts[idx], idx)
    merged = shards[2].merge(shards[1]).merge(shards[0])
    check_tracker(merged, expected)
    restored = UnitTracker.from_state_dict(merged.state_dict())
    check_tracker(restored, expected)


def test_tracker_leaves_out_non_finite_images():
    acts = torch.randn(6, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    acts[3, 0, 0, 0] = float("nan")
    tracker = UnitTracker(2, 6)
    tracker.update(acts, torch.arange(6))
    assert 3 not in [i for i, _, _ in tracker.exemplars(0, "max")]
    assert tracker.statistics(0)["images"] == 5 and tracker.statistics(1)["images"] == 6


def test_histograms_count_every_image_over_each_units_range():
    maxima = np.array([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [np.nan, 5.0]], dtype=np.float32)
    hists = histograms(maxima, bins=4, chunk=1)
    assert sum(hists[0]["counts"]) == 3 and hists[0]["edges"][0] == 0.0 and hists[0]["edges"][-1] == 2.0
    assert sum(hists[1]["counts"]) == 4


# --------------------------------------------------------------------------------- receptive fields
def test_receptive_field_matches_the_analytic_formula_of_a_conv_stack():
    model = conv_stack()
    # r_l = r_{l-1} + (k_l - 1) * d_l * j_{l-1}; j_l = j_{l-1} * s_l
    assert fs.receptive_field(model, "0") == fs.ReceptiveField(3, 3, 1.0, 1.0, -1.0, -1.0)
    rf = fs.receptive_field(model, "2")
    assert (rf.height, rf.width, rf.stride_y, rf.offset_y) == (5, 5, 2.0, -2.0)
    rf = fs.receptive_field(model, "4")
    assert (rf.height, rf.stride_y) == (5 + 4 * 2, 2.0)
    rf = fs.receptive_field(model, "6")
    assert (rf.height, rf.width, rf.stride_x) == (13 + 2 * 2 * 2, 21, 2.0)
    assert rf.box(0, 0, (32, 32))[:2] == (0, 0) and rf.box(8, 8, (32, 32)) == (6, 6, 27, 27)


def test_a_global_layer_sees_the_whole_input():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model = fs.wrap_model(net, preprocessing=PLAIN)
    assert fs.receptive_field(model, "1").whole and fs.receptive_field(model, "3").whole


# ------------------------------------------------------------------------------------- the atlas
def test_exemplars_and_statistics_equal_brute_force_and_crops_hold_the_maximum(tmp_path):
    model = conv_stack()
    paths = write_images(tmp_path / "data", 14)
    atlas = fs.Atlas(tmp_path / "atlas")
    summary = atlas.build(model, ["2", "6"], units=[0, 3], recipes=[], dataset=tmp_path / "data", exemplars=4)
    assert summary.passes == 2 and summary.rendered == 0
    data = list_dataset(tmp_path / "data")
    assert sorted(data.paths) == sorted(p.resolve() for p in paths)
    pixels = torch.stack([fs.prepare_image(model, p).pixels for p in data.paths])
    with torch.no_grad(), Capture(model, [fs.resolve_layer(model, "2"), fs.resolve_layer(model, "6")]) as capture:
        acts = capture(pixels)
    for name, ref in (("2", fs.resolve_layer(model, "2")), ("6", fs.resolve_layer(model, "6"))):
        layer_acts = acts[ref]
        rf = fs.receptive_field(model, name)
        for unit in (0, 3):
            record = atlas.unit(name, unit)
            check_record(record, layer_acts, unit, 4)
            assert sum(record.stats.histogram["counts"]) == 14
            for e in record.exemplars["max"]:
                assert e.has_crop and e.path == str(data.paths[e.image])
                assert e.box == list(rf.box(e.y, e.x, (32, 32)))
                # the crop's box contains the input pixel under the maximum's position
                cy, cx = e.y * rf.stride_y, e.x * rf.stride_x
                assert e.box[0] <= cx < e.box[2] and e.box[1] <= cy < e.box[3]
                with Image.open(io.BytesIO(atlas.store.exemplar_image(e.id))) as crop:
                    assert crop.size == (e.box[2] - e.box[0], e.box[3] - e.box[1])
                with Image.open(io.BytesIO(atlas.store.exemplar_image(e.id, thumbnail=True))) as thumb:
                    assert max(thumb.size) == 96
        means = atlas.store.matrix(atlas.store.latest_pass(atlas.layer(name).id).id)
        assert np.allclose(means, layer_acts.mean(dim=(2, 3)).numpy(), atol=1e-6)
    # units other than the wanted ones have exemplar records but no crops until a build asks for them
    assert not any(e.has_crop for e in atlas.unit("2", 1).exemplars["max"])
    again = atlas.build(model, ["2"], units=[1], recipes=[], dataset=tmp_path / "data", exemplars=4)
    assert again.passes == 0 and again.crops > 0 and all(e.has_crop for e in atlas.unit("2", 1).exemplars["max"])


def test_rerunning_a_finished_atlas_does_no_work_and_renders_are_recorded(tmp_path):
    model = conv_stack()
    write_images(tmp_path / "data", 6)
    atlas = fs.Atlas(tmp_path / "atlas")
    first = atlas.build(model, "6", units=[0, 1, 2], recipes=[TINY_RECIPE], seeds=[0, 1], dataset=tmp_path / "data",
                        exemplars=2, scores=False)
    assert first.rendered == 6 and first.passes == 1
    files = {p: p.read_bytes() for p in (tmp_path / "atlas" / "renders").rglob("*.png")}
    assert len(files) == 6
    second = atlas.build(model, "6", units=[0, 1, 2], recipes=[TINY_RECIPE], seeds=[0, 1], dataset=tmp_path / "data",
                         exemplars=2, scores=False)
    assert (second.rendered, second.passes, second.crops, second.already) == (0, 0, 0, 6)
    assert {p: p.read_bytes() for p in files} == files
    record = atlas.unit("6", 1)
    assert [(r.seed, r.status) for r in record.renders] == [(0, "ok"), (1, "ok")]
    r = record.renders[0]
    assert r.final_activation > r.initial_activation
    assert fs.read_png_metadata(tmp_path / "atlas" / r.file)["objective"] == "channel(6, 1)"
    assert [(s.layer, s.done, s.pending) for s in atlas.status().renders] == [("6", 3, 0), ("6", 3, 0)]
    # another seed is another render; the others stay
    third = atlas.build(model, "6", units=[0], recipes=[TINY_RECIPE], seeds=[5], scores=False)
    assert third.rendered == 1 and third.already == 0
    assert atlas.store.integrity_check() == "ok"


def test_the_atlas_object_is_a_small_face_status_covers_every_stage_and_check_repairs(tmp_path):
    public = {name for name in dir(fs.Atlas) if not name.startswith("_")}
    assert public == {"build", "status", "models", "layers", "layer", "unit", "map", "concepts", "check", "close"}
    write_images(tmp_path / "data", 6)
    with fs.Atlas(tmp_path / "atlas") as atlas:
        atlas.build(conv_stack(), ["4", "6"], units={"4": [0, 1], "6": [0]}, recipes=[TINY_RECIPE],
                    dataset=tmp_path / "data", exemplars=2, scores=False, circuits=True, trust=False)
        status = atlas.status()
        assert sorted((r.layer, r.done, r.pending) for r in status.renders) == [("4", 2, 0), ("6", 1, 0)]
        assert sorted((p.layer, p.images, p.status, p.units_with_crops) for p in status.passes) == [
            ("4", 6, "done", 2), ("6", 6, "done", 1)]
        assert sorted((s.layer, s.stage, s.text) for s in status.stages) == [
            ("4", "circuits", f"2 of {atlas.layer('4').channels} units have a circuit"),
            ("6", "circuits", f"1 of {atlas.layer('6').channels} units have a circuit")]
        assert {"model": "stack", "layer": "6", "stage": "circuits",
                "text": f"1 of {atlas.layer('6').channels} units have a circuit"} in status.to_dict()["stages"]
        assert atlas.check() == [] and [m.name for m in atlas.models()] == ["stack"]
        assert sorted(layer.name for layer in atlas.layers()) == ["4", "6"]
        (tmp_path / "atlas" / atlas.unit("4", 1).renders[0].file).unlink()
        (problem,) = atlas.check()
        assert problem.detail == "missing" and problem.kind == "renders"
        assert len(atlas.check(repair=True)) == 1 and atlas.check() == []
        assert sorted((r.layer, r.done, r.pending) for r in atlas.status().renders) == [("4", 1, 1), ("6", 1, 0)]


def test_quality_scores_are_recorded_for_photo_models(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    model = fs.wrap_model(net, preprocessing=PLAIN)
    atlas = fs.Atlas(tmp_path / "atlas")
    atlas.build(model, "1", units=[0], recipes=[TINY_RECIPE])
    r = atlas.unit("1", 0).renders[0]
    assert r.activation_ratio is not None and r.robustness is not None and 0 <= r.high_frequency_share <= 1
    image = fs.to_tensor(Image.open(tmp_path / "atlas" / r.file))
    (expected,) = fs.score(model, "channel(1, 0)", image)  # the same scores as filterscope evaluate gives
    assert r.activation_ratio == pytest.approx(expected.activation_ratio, rel=2e-2)  # the PNG is 8-bit
    assert r.robustness == pytest.approx(expected.robustness, rel=2e-2)


@pytest.mark.integration
def test_a_killed_exemplar_pass_resumes_from_its_checkpoint_to_the_same_result(tmp_path):
    model = conv_stack()
    write_images(tmp_path / "data", 20)

    class Stop(BuildProgress):
        def stage(self, name, done, total, note=""):
            if name == "exemplars" and done == 13:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # shards of 4 images: checkpoints after images 4, 8 and 12
        fs.build_atlas(tmp_path / "a", model, "4", recipes=[], dataset=tmp_path / "data", exemplars=3,
                       checkpoint_seconds=0, progress=Stop(), executor=LocalExecutor(shard_images=4))
    assert list((tmp_path / "a" / "activations").glob("*.ckpt"))
    messages = []

    class Log(BuildProgress):
        def message(self, text, *, warning=False):
            messages.append(text)

    fs.build_atlas(tmp_path / "a", model, "4", recipes=[], dataset=tmp_path / "data", exemplars=3, progress=Log())
    assert any("resuming after image 12 of 20" in m for m in messages)
    assert not list((tmp_path / "a" / "activations").glob("*.ckpt"))
    fs.build_atlas(tmp_path / "b", model, "4", recipes=[], dataset=tmp_path / "data", exemplars=3)
    a, b = fs.Atlas(tmp_path / "a"), fs.Atlas(tmp_path / "b")
    for unit in range(5):
        ua, ub = a.unit("4", unit), b.unit("4", unit)
        assert ua.exemplars == ub.exemplars or [
            [(e.image, e.value, e.y, e.x) for e in ua.exemplars[k]] for k in ua.exemplars] == [
            [(e.image, e.value, e.y, e.x) for e in ub.exemplars[k]] for k in ub.exemplars]
        assert ua.stats.mean == pytest.approx(ub.stats.mean) and ua.stats.histogram == ub.stats.histogram


def test_unreadable_dataset_images_are_skipped_and_named(tmp_path):
    model = conv_stack()
    write_images(tmp_path / "data", 4)
    (tmp_path / "data" / "broken.png").write_bytes(b"not a png")
    messages = []

    class Log(BuildProgress):
        def message(self, text, *, warning=False):
            messages.append(text)

    fs.build_atlas(tmp_path / "a", model, "2", units=[0], recipes=[], dataset=tmp_path / "data", progress=Log())
    assert any("broken.png" in m and m.startswith("skipped") for m in messages)
    assert fs.Atlas(tmp_path / "a").unit("2", 0).stats.images == 4


def test_dataset_lists_folders_recursively_and_list_files(tmp_path):
    paths = write_images(tmp_path / "data", 5)
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    assert len(list_dataset(tmp_path / "data")) == 5
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two images\n\ndata/b/{paths[0].name}\n{paths[1]}\n")
    data = list_dataset(listing)
    assert data.paths == (paths[0].resolve(), paths[1].resolve())
    assert data.hashes[0] == hashlib.sha256(paths[0].read_bytes()).hexdigest()
    listing.write_text("data/missing.png\n")
    with pytest.raises(ImageError, match=r"line 1: .*missing.png is not a file"):
        list_dataset(listing)
    with pytest.raises(ImageError, match="does not exist"):
        list_dataset(tmp_path / "nowhere")


def test_foreign_corrupt_and_newer_folders_give_one_clear_error(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(AtlasError, match="is not empty and is not an atlas"):
        fs.Atlas(tmp_path / "foreign")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "atlas.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(AtlasError, match="is not a readable atlas database"):
        fs.Atlas(tmp_path / "corrupt")
    (tmp_path / "other").mkdir()
    conn = sqlite3.connect(tmp_path / "other" / "atlas.sqlite")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(AtlasError, match="not a filterscope atlas"):
        fs.Atlas(tmp_path / "other")
    fs.Atlas(tmp_path / "newer").close()
    conn = sqlite3.connect(tmp_path / "newer" / "atlas.sqlite")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(AtlasError, match=r"newer filterscope \(atlas schema 99; .* reads up to 6\)"):
        fs.Atlas(tmp_path / "newer")
    with pytest.raises(AtlasError, match="No atlas in"):
        fs.Atlas(tmp_path / "missing", create=False)
    for folder, reading, building in (("foreign", "No atlas in", "is not empty and is not an atlas"),
                                      ("corrupt", "not a readable atlas", "not a readable atlas"),
                                      ("newer", "newer filterscope", "newer filterscope")):
        result = runner.invoke(app, ["atlas", "status", str(tmp_path / folder)])
        assert result.exit_code == 1 and reading in result.output and "Traceback" not in result.output
        result = runner.invoke(app, ["atlas", "build", str(tmp_path / folder), "-l", "x", "-m", "resnet18", "-w",
                                     "random"])
        assert result.exit_code == 1 and building in result.output and len(result.output.splitlines()) == 1


@pytest.mark.integration
def test_a_second_build_waits_for_the_first(tmp_path):
    model = conv_stack()
    messages = []

    class Log(BuildProgress):
        def message(self, text, *, warning=False):
            messages.append(text)

    done = []
    with OutputLock(tmp_path / "a", name=".build.lock", on_wait=lambda holder: None):
        worker = threading.Thread(target=lambda: done.append(fs.build_atlas(
            tmp_path / "a", model, "2", units=[0], recipes=[TINY_RECIPE], scores=False, progress=Log())))
        worker.start()
        time.sleep(1.0)
        assert not done and any("another atlas build (pid" in m and "waiting" in m for m in messages)
    worker.join(60)
    assert done and done[0].rendered == 1


def test_wrong_units_and_layers_are_named(tmp_path):
    model = conv_stack()
    with pytest.raises(fs.ChannelError, match=r"Unit 9 is out of range for layer 2 of stack, which has 6 units \(0-5"):
        fs.build_atlas(tmp_path / "a", model, "2", units=[9], recipes=[])
    with pytest.raises(fs.UnknownLayerError):
        fs.build_atlas(tmp_path / "a", model, "nope", recipes=[])
    atlas = fs.Atlas(tmp_path / "b")
    atlas.build(model, "2", units=[0], recipes=[TINY_RECIPE], scores=False)
    with pytest.raises(AtlasError, match="No layer '4'"):
        atlas.unit("4", 0)
    with pytest.raises(AtlasError, match=r"Unit 6 is out of range .* \(0-5\)"):
        atlas.unit("2", 6)


# ------------------------------------------------------------------------------------- command line


@pytest.mark.integration
def test_cli_build_status_show(tmp_path):
    write_images(tmp_path / "data", 5, size=64)
    out = tmp_path / "atlas"
    result = runner.invoke(app, ["atlas", "build", str(out), *ATLAS_CLI, "--units", "0-2", "--dataset",
                                 str(tmp_path / "data"), "--exemplars", "2"])
    assert result.exit_code == 0, result.output
    assert "3 render(s) done" in result.output and "exemplar pass over 5 images" in result.output
    status = runner.invoke(app, ["atlas", "status", str(out), "--json"])
    data = json.loads(status.output)
    assert data["renders"][0]["done"] == 3 and data["passes"][0]["units_with_crops"] == 3
    shown = runner.invoke(app, ["atlas", "show", str(out), "layer1.0.conv1", "1", "--json"])
    record = json.loads(shown.output)
    assert record["unit"] == 1 and record["renders"][0]["status"] == "ok" and len(record["exemplars"]["max"]) == 2
    assert (out / record["renders"][0]["file"]).is_file()
    text = runner.invoke(app, ["atlas", "show", str(out), "layer1.0.conv1", "1"]).output
    assert "render paper seed 0: ok" in text and "top by maximum" in text
    bad = runner.invoke(app, ["atlas", "show", str(out), "layer1.0.conv", "1"])
    assert bad.exit_code == 1 and "Did you mean 'layer1.0.conv1'" in bad.output
    again = runner.invoke(app, ["atlas", "build", str(out), *ATLAS_CLI, "--units", "0-2", "--dataset",
                                str(tmp_path / "data"), "--exemplars", "2"])
    assert again.exit_code == 0 and "0 render(s) done, 3 already in the atlas" in again.output


@pytest.mark.integration
def test_kill_9_during_a_build_then_a_second_run_finishes_it_exactly_once(tmp_path):
    out = tmp_path / "atlas"
    command = [sys.executable, "-m", "filterscope", "atlas", "build", str(out), *ATLAS_CLI, "--units", "0-11"]
    kill_after_first_unit_then_resume(command, out, 12)


def test_cofiring_is_the_pearson_correlation_over_finite_images():
    from filterscope.atlas.exemplars import cofiring

    rng = np.random.default_rng(0)
    means = rng.normal(size=(50, 6)).astype(np.float32)
    means[:, 4] = means[:, 1] * 2 + 0.1 * means[:, 4]  # 4 follows 1
    means[7] = np.nan                                   # a skipped image
    expected = np.corrcoef(np.delete(means, 7, axis=0).astype(np.float64).T)
    together = cofiring(means, k=3, chunk=8)
    assert together[1][0][0] == 4 and together[4][0][0] == 1
    for unit, row in enumerate(together):
        others = [u for u in np.argsort(-expected[unit], kind="stable") if u != unit][:3]
        assert [u for u, _ in row] == others
        assert [c for _, c in row] == pytest.approx([expected[unit, u] for u in others], abs=1e-9)


@pytest.mark.integration
def test_exemplars_and_statistics_on_the_real_model_equal_brute_force(tmp_path):
    from filterscope.demo import write_reference_set

    model = fs.load_model("efficientnet_lite0")
    data = write_reference_set(tmp_path / "photos", 10)
    atlas = fs.Atlas(tmp_path / "atlas")
    atlas.build(model, ["_blocks.4", "_blocks.10"], units=[0, 7], recipes=[], dataset=data, exemplars=4)
    paths = list_dataset(data).paths
    pixels = torch.stack([fs.prepare_image(model, p).pixels for p in paths])
    refs = [fs.resolve_layer(model, name) for name in ("_blocks.4", "_blocks.10")]
    with torch.no_grad(), Capture(model, refs) as capture:
        acts = capture(model.preprocessing.normalize(pixels))
    for ref in refs:
        for unit in (0, 7):
            record = atlas.unit(str(ref), unit)
            check_record(record, acts[ref], unit, 4, rel=1e-4)  # channels-last batches of 4 vs one NCHW batch
            assert all(e.has_crop for e in record.exemplars["max"])


class RecordingExecutor(LocalExecutor):
    """The local executor, noting which task functions it was given and the types of the tasks."""

    def __init__(self) -> None:
        super().__init__(shard_images=5)
        self.calls: list[tuple[object, set[type]]] = []

    def map(self, function, model, tasks, *, ordered=True, report=None):
        self.calls.append((function, {type(t) for t in tasks}))
        yield from super().map(function, model, tasks, ordered=ordered, report=report)


def test_a_build_only_maps_the_task_functions_workers_run(tmp_path):
    """The build reaches its executor only through map(task function, model, tasks), with the functions a
    Dask worker calls (run_on_worker calls the same function object), and the outcome does not depend on
    how the executor cuts or runs the work."""
    from filterscope.atlas.distributed import run_on_worker
    from filterscope.atlas.scan import PassShard, scan_shard
    from filterscope.atlas.stages.renders import RenderTask, render_task

    model = conv_stack()
    write_images(tmp_path / "data", 12)
    recording = RecordingExecutor()
    options = {"units": [0, 1], "recipes": [TINY_RECIPE], "dataset": tmp_path / "data", "exemplars": 3,
               "scores": False, "runtime": fs.Runtime(precision="fp32")}
    fs.build_atlas(tmp_path / "a", model, "4", executor=recording, **options)
    assert recording.calls == [(scan_shard, {PassShard}), (render_task, {RenderTask})]
    fs.build_atlas(tmp_path / "b", model, "4", **options)
    a, b = fs.Atlas(tmp_path / "a"), fs.Atlas(tmp_path / "b")
    for unit in (0, 1):
        ua, ub = a.unit("4", unit), b.unit("4", unit)
        assert (tmp_path / "a" / ua.renders[0].file).read_bytes() == (tmp_path / "b" / ub.renders[0].file).read_bytes()
        assert ua.stats.histogram == ub.stats.histogram
        for kind in ua.exemplars:  # the same images and places; values to float rounding (oneDNN's kernels
            # differ with the batch's size on some CPUs: 0.0103342831 and 0.0103342794 on a Xeon with AMX)
            assert [dataclasses.replace(e, value=0.0) for e in ua.exemplars[kind]] == \
                [dataclasses.replace(e, value=0.0) for e in ub.exemplars[kind]]
            values = [e.value for e in ub.exemplars[kind]]
            assert [e.value for e in ua.exemplars[kind]] == pytest.approx(values, rel=1e-5)
    # a worker's call: the model from its pickled bytes, then the very same task function, without report
    import cloudpickle

    task = RenderTask("4", (), TINY_RECIPE, "tiny", 0, fs.Runtime(precision="fp32"))
    seen = []
    out = run_on_worker(lambda m, t, r: seen.append((m.name, t, r)) or "done", "k", cloudpickle.dumps(model), task)
    assert out == "done" and seen == [(model.name, task, None)]


def test_an_atlas_of_schema_1_is_read_as_it_is_and_upgraded_by_a_writer(tmp_path):
    model = fs.wrap_model(conv_stack().module, name="stack", preprocessing=conv_stack().preprocessing,
                          weights=fs.zoo.WeightsSource.random(7))
    fs.build_atlas(tmp_path / "a", model, "4", units=[0], recipes=[TINY_RECIPE], scores=False)
    conn = sqlite3.connect(tmp_path / "a" / "atlas.sqlite")
    conn.execute("ALTER TABLE models DROP COLUMN weights_source")  # as schema 1 had it: the weights in words only
    conn.execute("DROP TABLE unit_circuits")  # and no circuits (schema 3)
    conn.execute("DROP TABLE circuit_pairs")
    conn.execute("DROP TABLE unit_trust")  # and no trust (schema 4)
    for table in ("map_cells", "maps", "map_samples", "files"):  # and no activation atlases (5), no file hashes (6)
        conn.execute(f"DROP TABLE {table}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with fs.Atlas(tmp_path / "a", create=False, readonly=True) as old:
        assert old.store.schema_version == 1 and old.store.model().weights == fs.zoo.WeightsSource.random(7)
        assert not old.store.circuit_sections(old.layer("4").id, 0)  # no circuit tables: nothing, no error
        assert old.store.maps_of_layer(old.layer("4").id) == []  # no map tables: no maps, no error
    with fs.Atlas(tmp_path / "a", create=False) as upgraded:
        assert upgraded.store.schema_version == 6 and upgraded.store.model().weights.seed == 7
        assert upgraded.store.maps_of_layer(upgraded.layer("4").id) == []  # the tables are there
        assert upgraded.store.units_with_section(upgraded.layer("4").id, "inputs") == set()
        assert upgraded.unit("4", 0).renders[0].status == "ok"


def test_an_exemplars_only_build_skips_circuits_and_trust_unless_asked_and_says_so(tmp_path):
    model = conv_stack()
    write_images(tmp_path / "data", 4)
    messages: list[str] = []

    class Log(BuildProgress):
        def message(self, text, *, warning=False):
            messages.append(text)

    skipped = fs.build_atlas(tmp_path / "a", model, ["2", "4"], units=[0], recipes=[], dataset=tmp_path / "data",
                             exemplars=2, progress=Log())
    assert skipped.passes == 2 and skipped.circuits == 0 and "circuits" not in skipped.stages
    assert any(m.startswith("exemplars only: circuits and trust records are not computed") for m in messages)
    asked = fs.build_atlas(tmp_path / "a", model, ["2", "4"], units=[0], recipes=[], dataset=tmp_path / "data",
                           exemplars=2, circuits=True)
    assert asked.passes == 0 and asked.circuits == 1  # unit 0 of layer 4, from layer 2


def test_circuit_sections_round_trip_through_the_json_an_atlas_stores():
    from filterscope.atlas.sections import ClassesSection, InputsSection, Link, OutputsSection, section_from_dict
    from filterscope.circuits.evidence import AblationCheck

    ablation = AblationCheck(2, 1.5, {"3": 0.5}, {"3": [1, 2]}, [[0, 4]], [0.1], {"3": 5.0})
    kinds = [InputsSection("4", (3, 3), 8, (Link(1, 0.5, ((0.1, 0.2), (0.3, 0.4))),), (Link(2, -0.25),),
                           (Link(1, 0.3, attribution=0.7),), 0.5, None, ablation),
             OutputsSection("6", (Link(0, 1.0),), ()), ClassesSection((Link(409, 2.0, name="analog clock"),), ())]
    for section in kinds:
        stored = json.loads(json.dumps(section.to_dict()))  # what the atlas's unit_circuits table holds
        assert section_from_dict(section.kind, stored) == section
        assert json.dumps(section_from_dict(section.kind, stored).to_dict()) == json.dumps(stored)
