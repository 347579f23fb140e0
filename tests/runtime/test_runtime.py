"""The fast paths give the plain path's results; memory sizing, devices, threads and prefetching."""

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from filterscope import Recipe, visualize_filters
from filterscope.analysis import layer_means, rank_filters, sensitivity_maps
from filterscope.cli import app
from filterscope.engine.naive import naive_render
from filterscope.errors import DeviceError, RuntimeSettingError
from filterscope.layers import resolve_layer
from filterscope.runtime import (
    BATCH_LIMITS,
    Forward,
    MemoryEstimate,
    Runtime,
    auto_batch_size,
    estimate_memory,
    parse_memory,
    prefetch,
    usable_cpus,
)
from filterscope.zoo import resolve_device

from ..helpers.models import color_net

TINY = Recipe(size=32, scales=3, steps=4)
EXACT = Recipe(size=32, scales=3, steps=1)
"""One step per scale: on an alive network, Adam's first steps move each pixel by about the learning rate whatever
the gradient's size, so a rounding difference in a near-zero gradient flips a step (0.09 apart after 2 steps)."""
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
@pytest.mark.parametrize("layer", ["layer2.1.conv1", "layer3.1.relu"])
def test_fast_render_matches_the_naive_full_forward_loop(resnet18_random, layer):
    # naive: one filter at a time, whole network every step, NCHW. fast: truncated, channels-last, automatic batch,
    # an explicit batch of both filters, and batch norms folded (the default). Each is another float32 rounding of
    # the same function, so Adam's sign-like first steps flip a few pixels' steps (0.1 % of them on layer3.1.relu,
    # which pixels depends on the kernels and the thread count); every other pixel agrees to float rounding.
    plain = [naive_render(resnet18_random, layer, c, EXACT, seed=1) for c in (0, 5)]
    images = torch.stack([image for image, _ in plain])
    values = torch.tensor([value for _, value in plain])
    exact = Runtime(precision="fp32", fold=False)  # the claim is about fp32 (auto may pick bf16 on a bf16 CPU)
    for runtime, batch in ((exact, None), (exact, 2), (Runtime(precision="fp32", channels_last=False, fold=False), 2),
                           (Runtime(precision="fp32"), None)):
        fast = visualize_filters(resnet18_random, layer, [0, 5], recipe=EXACT, seed=1, runtime=runtime,
                                 batch_size=batch)
        flipped = (fast.images - images).abs() > 1e-3
        assert float(flipped.float().mean()) < 0.01, (runtime, batch)
        torch.testing.assert_close(fast.values, values, rtol=2e-2, atol=1e-4)  # flipped pixels move it by ~1 %
    assert fast.extra["batch_norms"].endswith("folded into their convolutions")


def test_channels_last_is_used_and_put_back(resnet18_random):
    ref = resolve_layer(resnet18_random, "layer1.0.conv1")
    weight = resnet18_random.module.conv1.weight
    with Forward(resnet18_random, [ref], Runtime()) as forward:
        assert resnet18_random.module.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        act = forward(torch.zeros(1, 3, 32, 32))[ref]
        assert act.is_contiguous(memory_format=torch.channels_last) and act.dtype == torch.float32
    assert resnet18_random.module.conv1.weight.is_contiguous()
    assert weight.shape == resnet18_random.module.conv1.weight.shape


@pytest.mark.integration
@pytest.mark.numerics
def test_bf16_keeps_float32_activations_and_lands_near_fp32(resnet18_random):
    """A render is chaotic (a rounding-sized change flips Adam's first steps), so bf16 is compared with fp32 as
    seeds compare with each other: over four seeds each, the mean final activations differ by at most three
    standard errors of the difference, computed from those renders' own spread."""
    def finals(precision: str) -> torch.Tensor:
        runs = [visualize_filters(resnet18_random, "layer3.1.relu", [0, 5], recipe=TINY, seed=seed,
                                  runtime=Runtime(precision=precision)) for seed in range(1, 5)]
        assert all(r.values.dtype == torch.float32 and (r.values > 5 * r.initial_values.abs()).all() for r in runs)
        return torch.stack([r.values for r in runs])

    fp32, bf16 = finals("fp32"), finals("bf16")
    standard_error = (fp32.var(dim=0) / len(fp32) + bf16.var(dim=0) / len(bf16)).sqrt()
    assert ((bf16.mean(dim=0) - fp32.mean(dim=0)).abs() <= 3 * standard_error).all()


@pytest.mark.integration
@pytest.mark.numerics
def test_analysis_batching_gives_identical_top_k(resnet18_random, tmp_path):
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    paths = []
    for i in range(5):
        pixels = (torch.rand(40, 48, 3, generator=generator) * 255).to(torch.uint8).numpy()
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    rankings = [rank_filters(resnet18_random, paths, "layer3.1.relu", k=8, augment=2, batch_size=b,
                             runtime=Runtime(channels_last=cl))
                for b, cl in ((1, False), (3, None), (7, None), (32, None))]
    for other in rankings[1:]:
        assert other.top == rankings[0].top
        torch.testing.assert_close(other.per_image, rankings[0].per_image, rtol=1e-5, atol=1e-6)


def test_sensitivity_maps_do_not_depend_on_batch_or_layout():
    model = color_net()
    image = torch.zeros(3, 32, 32)
    image[0, 8:16, 8:16] = 1
    from filterscope.analysis import AnalysisImage
    from filterscope.zoo.preprocessing import Placement

    item = AnalysisImage("square", image, Placement(1.0, 1.0, 0.0, 0.0, 32, 32), (32, 32))
    maps = [sensitivity_maps(model, item, "conv1", [0, 3], patch=8, stride=4, batch_size=b, fill="black",
                             runtime=Runtime(channels_last=cl)).maps for b, cl in ((1, False), (5, True), (64, None))]
    for other in maps[1:]:
        torch.testing.assert_close(other, maps[0], rtol=1e-5, atol=1e-6)
    y, x = divmod(int(maps[0][0].argmax()), 32)  # the red filter's map peaks on the square
    assert 8 <= y < 16 and 8 <= x < 16 and float(maps[0][0].max()) > 0.03


def test_layer_means_bf16_close_to_fp32(resnet18_random):
    pixels = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    exact = layer_means(resnet18_random, "layer2.1.relu", pixels)
    rough = layer_means(resnet18_random, "layer2.1.relu", pixels, runtime=Runtime(precision="bf16"))
    assert rough.dtype == torch.float32
    torch.testing.assert_close(rough, exact, rtol=0.05, atol=0.02)


# ------------------------------------------------------------------------------------------ memory
def test_auto_batch_size_fits_the_budget_and_the_device_limit():
    estimate = MemoryEstimate(per_image=100, fixed=50, size=64)
    assert auto_batch_size(100, estimate, 1050, torch.device("cuda"), "fp32") == 10
    assert auto_batch_size(3, estimate, 10_000, torch.device("cuda"), "fp32") == 3
    assert auto_batch_size(100, estimate, 10**9, torch.device("cpu"), "bf16") == BATCH_LIMITS[("cpu", "bf16")]
    with pytest.raises(RuntimeSettingError, match="too small.*one image at 64 px needs"):
        auto_batch_size(5, estimate, 120, torch.device("cpu"), "fp32")


def test_estimate_grows_with_size_and_batchwise_render_refuses_a_small_budget(resnet18_random):
    from filterscope.engine.objectives import diversity
    from filterscope.engine.render import render

    ref = resolve_layer(resnet18_random, "layer3.1.relu")
    small, large = (estimate_memory(resnet18_random, [ref], s) for s in (64, 128))
    assert 3 < large.per_image / small.per_image < 5  # activations scale with the area
    budget = int(small.total(2) + small.per_image // 2)  # two images fit at 64 px, not three
    with pytest.raises(Exception, match="needs all 3 images in one batch"):
        render(resnet18_random, diversity("layer3.1.relu"), recipe=Recipe(size=64, scales=1, steps=1), copies=3,
               runtime=Runtime(precision="fp32", max_memory=budget))


MEASURE = textwrap.dedent("""
    import json
    from pathlib import Path
    from filterscope import Channel, Recipe, load_model
    from filterscope.layers import resolve_layer
    from filterscope.engine.render import render
    from filterscope.runtime import Runtime, estimate_memory, proc_bytes as status

    model = load_model("resnet18", "random")
    ref = resolve_layer(model, "layer3.1.relu")
    recipe = Recipe(size=160, scales=1, steps=2)
    estimate = estimate_memory(model, [ref], 160)
    budget = estimate.fixed + int(3.5 * estimate.per_image)
    batch = estimate.fits(budget)
    render(model, Channel(ref, 0), recipe=Recipe(size=32, scales=1, steps=1), batch_size=1)  # lazy init
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = status("VmRSS")
    render(model, [Channel(ref, c) for c in range(batch)], recipe=recipe, batch_size=batch,
           runtime=Runtime(precision="fp32", max_memory=budget))
    print(json.dumps({"budget": budget, "batch": batch, "peak": status("VmHWM") - before,
                      "estimate": estimate.total(batch)}))
""")


@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to measure peak memory")
def test_memory_budget_batch_stays_within_the_budget_measured():
    # A fresh process; glibc told to return every allocation over 64 KiB to the system when freed, so the
    # resident set follows the live tensors and its peak is the real peak.
    env = {"MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    import json

    numbers = json.loads(done.stdout.strip().splitlines()[-1])
    assert numbers["batch"] == 3
    assert numbers["peak"] <= numbers["budget"], numbers
    # and the estimate is not wildly pessimistic either (measured: 0.7-0.85 of it)
    assert numbers["peak"] > 0.4 * numbers["estimate"], numbers


@pytest.mark.parametrize("text, expected", [("512M", 512 * 2**20), ("4G", 4 * 2**30), ("1.5GiB", int(1.5 * 2**30)),
                                            ("2000000", 2_000_000), (" 64 kb ", 64 * 1024)])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "4X", "-1G", "0"])
def test_parse_memory_rejects_bad_sizes(text):
    with pytest.raises(RuntimeSettingError, match="memory size|must be positive"):
        parse_memory(text)


def test_runtime_rejects_unknown_precision():
    with pytest.raises(RuntimeSettingError, match="fp32 or bf16"):
        Runtime(precision="fp16")


# ----------------------------------------------------------------------------------- device, threads
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_a_clear_error(tmp_path):
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")
    result = CliRunner().invoke(app, ["visualize", "-m", "resnet18", "-w", "random", "-l", "layer1", "-f", "0",
                                      "--device", "cuda", "-o", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: Device 'cuda' asked for, but CUDA is not available on this machine (use --device cpu or auto)"]
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_reaches_the_cpu_activation(resnet18_random):
    # Stated tolerance: final activation within 1 % of the CPU's (fp32, TF32 off while rendering).
    cpu = visualize_filters(resnet18_random, "layer3.1.relu", [0, 5], recipe=TINY, seed=1)
    gpu_model = resnet18_random.to("cuda")
    try:
        gpu = visualize_filters(gpu_model, "layer3.1.relu", [0, 5], recipe=TINY, seed=1)
    finally:
        resnet18_random.to("cpu")
    torch.testing.assert_close(gpu.values, cpu.values, rtol=0.01, atol=1e-4)


def test_usable_cpus_respects_a_cgroup_quota(tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    assert usable_cpus(quota) == min(2, usable_cpus(tmp_path / "missing"))
    quota.write_text("max 100000\n")
    assert usable_cpus(quota) == usable_cpus(tmp_path / "missing") >= 1


def test_prefetch_keeps_order_runs_ahead_in_another_thread_and_raises_in_place():
    threads = set()

    def load(i: int) -> int:
        threads.add(threading.get_ident())
        if i == 4:
            raise ValueError("bad item 4")
        return i * i

    results = []
    with pytest.raises(ValueError, match="bad item 4"):
        results.extend(prefetch(range(10), load, ahead=2))
    assert results == [0, 1, 4, 9]
    assert threading.get_ident() not in threads


@pytest.mark.integration
@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator options")
def test_keep_freed_memory_sets_glibcs_options_in_a_fresh_process():
    """In a child process (the options are per process): mallopt accepts all three, and a 200 MB block freed and
    allocated again is served from the heap (the resident size stays) instead of a fresh mmap."""
    code = textwrap.dedent("""
        import ctypes, resource, sys
        from filterscope.runtime import keep_freed_memory
        if sys.argv[1] == "keep":
            assert keep_freed_memory() is True
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        def resident():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize() >> 20
        before = resident()
        block = libc.malloc(200 << 20)
        ctypes.memset(block, 1, 200 << 20)
        libc.free(block)
        print(resident() - before)
    """)
    kept = {mode: int(subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                                     check=True).stdout) for mode in ("keep", "default")}
    assert kept["keep"] >= 190 and kept["default"] < 10  # kept for the next step, not unmapped
