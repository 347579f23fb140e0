"""Atlas builds on a Dask LocalCluster bound to 127.0.0.1: the same atlas as a local build, a worker killed
while it holds a task, the client killed, a unit failing on its own."""

import os
import signal
import sys
import threading
import time

import pytest
import torch
from torch import nn

import filterscope as fs
from filterscope.atlas.distributed import DaskExecutor, parse_cluster
from filterscope.errors import InvalidOptionError

from ..helpers.atlases import ATLAS_CLI, TINY_RECIPE, conv_stack, write_images
from ..helpers.killing import kill_after_first_unit_then_resume
from ..helpers.maps import SMALL
from ..helpers.models import PLAIN
from ..helpers.recipes import TRUST_RECIPE

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def executor():
    with DaskExecutor("local:2") as ex:
        client = ex.connect()
        assert all(address.startswith("tcp://127.0.0.1:") for address in client.scheduler_info()["workers"])
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        yield ex


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two workers on this 2-core machine
    yield
    torch.set_num_threads(before)


def test_parse_cluster():
    assert parse_cluster("local:3") == ("local", 3)
    assert parse_cluster("tcp://10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")
    for bad in ("local:0", "local:x", "10.0.0.5:8786", "tcp://"):
        with pytest.raises(InvalidOptionError):
            parse_cluster(bad)


@pytest.mark.integration
@pytest.mark.numerics
def test_a_cluster_build_equals_a_local_build(tmp_path, executor, one_thread):
    write_images(tmp_path / "data", 14)
    model = conv_stack()
    lite = fs.load_model("efficientnet_lite0")
    small = fs.get_recipe("paper").replace(size=24, scales=2, steps=2)
    # fp32: the comparison is of where the work runs; auto could decide per process
    common = {"dataset": tmp_path / "data", "exemplars": 3, "scores": False, "runtime": fs.Runtime(precision="fp32")}
    on_cluster = tmp_path / "cluster"
    fs.build_atlas(on_cluster, model, ["2", "6"], units=[0, 1, 2], recipes=[TINY_RECIPE], executor=executor,
                   **common)
    fs.build_atlas(on_cluster, lite, ["_blocks.4"], units=[0, 5], recipes=[small], executor=executor, **common)
    local = tmp_path / "local"
    fs.build_atlas(local, model, ["2", "6"], units=[0, 1, 2], recipes=[TINY_RECIPE], **common)
    fs.build_atlas(local, lite, ["_blocks.4"], units=[0, 5], recipes=[small], **common)
    a, b = fs.Atlas(on_cluster, create=False), fs.Atlas(local, create=False)
    for model_name, layer, units in (("stack", "2", [0, 1, 2]), ("stack", "6", [0, 1, 2]),
                                     ("efficientnet_lite0", "_blocks.4", [0, 5])):
        for unit in units:
            ua, ub = a.unit(layer, unit, model_name), b.unit(layer, unit, model_name)
            # same settings and thread count (1): the same bytes
            assert (on_cluster / ua.renders[0].file).read_bytes() == (local / ub.renders[0].file).read_bytes()
            for kind in ub.exemplars:  # the merge of the shards is exact
                assert [(e.image, e.value, e.y, e.x) for e in ua.exemplars[kind]] == [
                    (e.image, e.value, e.y, e.x) for e in ub.exemplars[kind]]
            assert ua.stats.mean == pytest.approx(ub.stats.mean, rel=1e-9, abs=1e-12)
            assert ua.stats.std == pytest.approx(ub.stats.std, rel=1e-9)
            assert ua.stats.histogram == ub.stats.histogram
    assert a.store.integrity_check() == "ok"


class NanChannel(nn.Module):
    """Replaces channel 2 by NaN, without a gradient (so the other channels' gradients stay finite)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(x, dtype=torch.bool)
        mask[:, 2] = True
        return torch.where(mask, torch.full_like(x, float("nan")), x)


@pytest.mark.integration
def test_a_unit_that_fails_on_its_own_is_recorded_and_the_others_finish(tmp_path, executor):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), NanChannel())
    model = fs.wrap_model(net, name="broken", preprocessing=PLAIN)
    summary = fs.build_atlas(tmp_path / "a", model, "2", recipes=[TINY_RECIPE], scores=False, executor=executor)
    assert summary.rendered == 4 and len(summary.failed) == 1 and "unit 2" in summary.failed[0]
    with fs.Atlas(tmp_path / "a") as atlas:
        statuses = {r.unit: r.status for layer in atlas.layers() for r in atlas.store.renders(layer.id)}
    assert statuses == {0: "ok", 1: "ok", 2: "failed", 3: "ok"}


@pytest.mark.integration
def test_a_worker_killed_while_it_holds_a_task(tmp_path):
    model = conv_stack()
    slow = TINY_RECIPE.replace(steps=40)
    with DaskExecutor("local:2", units_per_task=1) as ex:
        client = ex.connect()
        pids = client.run(os.getpid)
        result: list = []
        build = threading.Thread(target=lambda: result.append(fs.build_atlas(
            tmp_path / "a", model, ["4", "6"], recipes=[slow], scores=False, executor=ex)))
        build.start()
        victim = None
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            busy = [address for address, tasks in client.processing().items() if tasks]
            if busy:
                victim = busy[0]
            time.sleep(0.02)
        assert victim is not None, "no task was ever running"
        os.kill(pids[victim], signal.SIGKILL)
        build.join(300)
        assert result, "the build did not finish"
    summary = result[0]
    assert summary.rendered == 5 + 4 and not summary.failed
    atlas = fs.Atlas(tmp_path / "a", create=False)
    rows = [(layer.name, r.unit, r.status) for layer in atlas.layers() for r in atlas.store.renders(layer.id)]
    assert sorted(rows) == sorted([("4", u, "ok") for u in range(5)] + [("6", u, "ok") for u in range(4)])
    assert atlas.store.integrity_check() == "ok"


@pytest.mark.integration
def test_the_client_killed_then_a_second_run_finishes_exactly_once(tmp_path):
    out = tmp_path / "atlas"
    command = [sys.executable, "-m", "filterscope", "atlas", "build", str(out), *ATLAS_CLI, "--units", "0-9",
               "--cluster", "local:2"]
    kill_after_first_unit_then_resume(command, out, 10)


def test_the_cluster_is_given_the_same_task_functions_as_this_process(tmp_path, executor, monkeypatch):
    """What the build hands a DaskExecutor is what it hands the LocalExecutor: the same functions of
    filterscope.atlas.stages over the same tasks; the executor only decides where they run."""
    from filterscope.atlas.executors import LocalExecutor

    seen: dict[str, list] = {"cluster": [], "local": []}

    def spying(label, original):
        def map(function, model, tasks, **options):
            seen[label].append((function, list(tasks)))
            return original(function, model, tasks, **options)
        return map

    local = LocalExecutor()
    monkeypatch.setattr(executor, "map", spying("cluster", executor.map))
    monkeypatch.setattr(local, "map", spying("local", local.map))
    write_images(tmp_path / "data", 6)
    common = {"units": [0, 1], "recipes": [TINY_RECIPE], "dataset": tmp_path / "data", "exemplars": 2,
              "scores": False, "runtime": fs.Runtime(precision="fp32")}
    fs.build_atlas(tmp_path / "a", conv_stack(), ["4", "6"], executor=executor, **common)
    fs.build_atlas(tmp_path / "b", conv_stack(), ["4", "6"], executor=local, **common)
    from filterscope.atlas.scan import scan_shard
    from filterscope.atlas.stages.circuits import circuit_task
    from filterscope.atlas.stages.renders import render_task

    assert [f for f, _ in seen["cluster"]] == [f for f, _ in seen["local"]] == [scan_shard, circuit_task, render_task]
    assert [tasks for _, tasks in seen["cluster"]] == [tasks for _, tasks in seen["local"]]  # the same tasks
    with fs.Atlas(tmp_path / "a") as a, fs.Atlas(tmp_path / "b") as b:
        for unit in (0, 1):  # the circuits a worker computed are this process's
            there = a.store.circuit_sections(a.layer("6").id, unit).inputs
            here = b.store.circuit_sections(b.layer("6").id, unit).inputs
            assert there is not None and here is not None and there.ablation and here.ablation
            assert [c.unit for c in there.excite] == [c.unit for c in here.excite]
            assert there.ablation.ratios == pytest.approx(here.ablation.ratios, rel=1e-4)


@pytest.mark.integration
@pytest.mark.numerics
def test_the_trust_stage_runs_on_the_cluster_as_here(tmp_path, executor, one_thread):

    from ..helpers.models import fooling, save_photos

    save_photos(tmp_path / "photos", 24)
    common = {"units": [0, 1], "recipes": [TRUST_RECIPE], "dataset": tmp_path / "photos", "scores": False,
              "circuits": False, "runtime": fs.Runtime(precision="fp32")}
    there = fs.build_atlas(tmp_path / "a", fooling(), "conv3", executor=executor, **common)
    here = fs.build_atlas(tmp_path / "b", fooling(), "conv3", **common)
    assert there.trust == here.trust == 2
    with fs.Atlas(tmp_path / "a") as a, fs.Atlas(tmp_path / "b") as b:
        ra, rb = (x.store.unit_trust(x.layer("conv3").id) for x in (a, b))
    for unit in (0, 1):
        assert ra[unit].flags == rb[unit].flags and ra[unit].description.text == rb[unit].description.text
        assert ra[unit].paths.share == rb[unit].paths.share  # type: ignore[union-attr]
        assert [s.score for s in ra[unit].afc] == pytest.approx([s.score for s in rb[unit].afc], abs=0.02)


@pytest.mark.integration
@pytest.mark.numerics
def test_an_activation_atlas_builds_on_the_cluster_as_here(tmp_path, executor, one_thread):

    from ..helpers.models import color_classes, save_photos

    save_photos(tmp_path / "photos", 40)
    common = {"recipes": (), "dataset": tmp_path / "photos", "circuits": False, "trust": False, "maps": SMALL,
              "runtime": fs.Runtime(precision="fp32")}
    there = fs.build_atlas(tmp_path / "a", color_classes(), "conv2", executor=executor, **common)
    here = fs.build_atlas(tmp_path / "b", color_classes(), "conv2", **common)
    assert there.maps == here.maps == 1 and there.icons == here.icons > 0
    with fs.Atlas(tmp_path / "a") as a, fs.Atlas(tmp_path / "b") as b:
        ma, mb = a.map("conv2"), b.map("conv2")
    assert (ma.places == mb.places).all() and [c.count for c in ma.cells] == [c.count for c in mb.cells]
    assert [c.label for c in ma.cells] == [c.label for c in mb.cells]
    assert [c.final for c in ma.cells] == pytest.approx([c.final for c in mb.cells], rel=1e-4)
