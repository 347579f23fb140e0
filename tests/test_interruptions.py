"""Long runs never lose finished work: resume, a lock per output folder, stale temporary files cleaned up,
batches saved whole, and real SIGKILL / SIGTERM / SIGINT sent to a child process in the middle of a run."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from filterscope import StepInfo, read_png_metadata
from filterscope.cli import app
from filterscope.files import OutputLock

runner = CliRunner()
TINY = ["-m", "resnet18", "-w", "random", "-l", "layer1.0.conv1", "--size", "32", "--scales", "2", "--steps", "3",
        "--batch-size", "1", "-q"]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.mark.integration
def test_resume_renders_only_what_is_missing(tmp_path):
    first = runner.invoke(app, ["visualize", *TINY, "-f", "0-3", "-o", str(tmp_path)])
    assert first.exit_code == 0, first.output
    pngs = sorted(tmp_path.glob("resnet18-layer1.0.conv1-f*.png"))
    assert len(pngs) == 4
    kept = {p: (p.stat().st_mtime_ns, pixels(p)) for p in pngs}
    missing = pngs[2]
    before = kept.pop(missing)[1]
    missing.unlink()
    again = runner.invoke(app, ["visualize", *TINY, "-f", "0-3", "-o", str(tmp_path)])
    assert again.exit_code == 0, again.output
    assert "resuming: 3 of 4 objective(s) are already in" in again.output and "rendering the other 1" in again.output
    assert np.array_equal(pixels(missing), before)  # same seed, noise and settings: the same image
    assert all(p.stat().st_mtime_ns == mtime for p, (mtime, _) in kept.items())  # the others were not touched
    other_seed = runner.invoke(app, ["visualize", *TINY, "-f", "0-3", "--seed", "1", "-o", str(tmp_path)])
    assert other_seed.exit_code == 0 and "resuming" not in other_seed.output  # other settings: all rendered anew
    assert read_png_metadata(missing)["seed"] == "1"
    forced = runner.invoke(app, ["visualize", *TINY, "-f", "0-3", "--seed", "1", "--no-resume", "-o", str(tmp_path)])
    assert forced.exit_code == 0 and "resuming" not in forced.output


@pytest.mark.integration
def test_two_runs_never_write_into_one_folder(tmp_path):
    with OutputLock(tmp_path):
        result = runner.invoke(app, ["visualize", *TINY, "-f", "0", "-o", str(tmp_path)])
    assert result.exit_code == 1
    assert f"is being written by another filterscope run (pid {os.getpid()})" in result.output
    assert not list(tmp_path.glob("*.png"))
    assert runner.invoke(app, ["visualize", *TINY, "-f", "0", "-o", str(tmp_path)]).exit_code == 0  # released
    assert not (tmp_path / ".filterscope.lock").exists()


def test_stale_temporary_files_are_removed_by_the_next_run(tmp_path):
    dead = tmp_path / ".resnet18-layer1.0.conv1-f0000.png.4194303.abcdef12.part"  # no such pid
    alive = tmp_path / f".other.png.{os.getpid()}.0123abcd.part"
    dead.write_bytes(b"")
    alive.write_bytes(b"")
    assert runner.invoke(app, ["visualize", *TINY, "-f", "0", "-o", str(tmp_path)]).exit_code == 0
    assert not dead.exists() and alive.exists()


def _child(out: Path, filters: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "filterscope", "visualize", "-m", "resnet18", "-w", "random", "-l",
            "layer2.0.conv1", "-f", filters, "--size", "48", "--scales", "2", "--steps", "12", "--batch-size", "1",
            "-q", "-o", str(out)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)


def _wait_for_pngs(out: Path, count: int, process: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while len(list(out.glob("*-f*.png"))) < count:
        if process.poll() is not None:
            pytest.fail(f"the child ended early ({process.returncode}): {process.communicate()[1][-500:]}")
        if time.monotonic() > deadline:
            process.kill()
            process.communicate()
            pytest.fail("no PNG appeared in time")
        time.sleep(0.05)


@pytest.mark.integration
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGKILL, -9), (signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_killed_run_keeps_finished_images_and_the_next_run_finishes_the_rest(tmp_path, sig, code):
    process = _child(tmp_path, "0-7")
    _wait_for_pngs(tmp_path, 2, process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code
    assert "Traceback" not in stderr
    if sig != signal.SIGKILL:
        assert ("terminated" if sig == signal.SIGTERM else "interrupted") in stderr
    finished = sorted(tmp_path.glob("*-f*.png"))
    assert 2 <= len(finished) < 8
    for png in finished:  # every file under its final name is a whole PNG with its metadata
        assert read_png_metadata(png)["filter"] and pixels(png).shape == (57, 57, 3)
    resumed = _child(tmp_path, "0-7")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    match = re.search(r"resuming: (\d+) of 8 objective\(s\).*rendering the other (\d+)", err)
    assert match and int(match.group(1)) == len(finished) and int(match.group(2)) == 8 - len(finished)
    assert len(list(tmp_path.glob("*-f*.png"))) == 8
    assert not list(tmp_path.glob(".*.part")) and not (tmp_path / ".filterscope.lock").exists()


@pytest.mark.integration
def test_weights_with_nan_never_give_a_normal_looking_png(tmp_path):
    import torch

    from filterscope import load_model

    state = load_model("resnet18", "random").module.state_dict()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    out = tmp_path / "out"
    result = runner.invoke(app, ["visualize", "-m", "resnet18", "-w", str(tmp_path / "nan.pth"), "-l",
                                 "layer1.0.conv1", "-f", "0,1", "--size", "32", "--scales", "2", "--steps", "2", "-q",
                                 "-o", str(out)])
    assert result.exit_code == 1
    assert "1 of 2 image(s) went non-finite (NaN or infinity) and were not saved: channel(layer1.0.conv1, 0)" \
        in result.output
    assert "Traceback" not in result.output
    # filter 0 reads the NaN weight: no image; filter 1 does not (its own weights are finite): a real image
    assert [p.name for p in out.glob("*-f*.png")] == ["resnet18-layer1.0.conv1-f0001.png"]


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    from filterscope import load_image

    ramp = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # really a 16-bit file
    image = np.asarray(load_image(path))
    assert image.shape == (48, 64, 3)
    assert abs(float(image.mean()) - 127.5) < 2  # a ramp over the whole range, not 99 % white
    assert (image == 255).mean() < 0.01


@pytest.mark.integration
@pytest.mark.parametrize("delay", [0.2, 0.5, 0.9])
def test_ctrl_c_while_the_program_starts_is_quiet(delay):
    # Python is up after about 0.05 s and torch loads for over a second; at some moments the signal lands
    # inside torch's C++ module initialisation, where an exception raised by the handler used to abort.
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "filterscope", "models"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert time.monotonic() - start < 30
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err


def test_a_signal_whose_exception_was_lost_stops_the_next_step(monkeypatch):
    # A handler's exception that lands in a finalizer is only reported by Python, and the run would go on;
    # the step callback raises it again.
    import importlib

    from filterscope.cli.progress import RenderProgress

    cli_app = importlib.import_module("filterscope.cli.app")  # the module (the package's `app` is the Typer app)

    progress = RenderProgress("test", None, True)
    info = StepInfo(0, 1, 0, 8, 0, 1, 4, torch.zeros(1), (8, 8))
    progress(info)  # nothing pending: a normal step
    monkeypatch.setattr(cli_app, "_received", [signal.SIGINT])
    with pytest.raises(KeyboardInterrupt):
        progress(info)
    monkeypatch.setattr(cli_app, "_received", [signal.SIGTERM])
    with pytest.raises(cli_app.Terminated):
        progress(info)
    progress.close()
