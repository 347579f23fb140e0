"""--precision auto: bf16 only where the probe finds it faster; the choice tested with made-up timings."""

from __future__ import annotations

import json

import pytest
import torch

import filterscope.runtime.precision as precision
from filterscope import visualize_filters
from filterscope.engine.recipes import Recipe
from filterscope.layers import resolve_layer
from filterscope.runtime import Runtime
from filterscope.runtime.precision import CACHE_FILE, MARGIN, choose_precision
from filterscope.zoo.model import coerce_model

TINY = Recipe(size=24, scales=2, steps=3)


def _stack() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3), torch.nn.ReLU())


@pytest.fixture
def model():
    return coerce_model(_stack())


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU that reports AVX512-BF16, whatever this machine's is."""
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: {"avx512_bf16"})


def _never(*args, **kwargs):
    raise AssertionError("the probe must not run")


def _timings(fp32: float, bf16: float | None):
    def probe(*args, **kwargs):
        return {"fp32": fp32} if bf16 is None else {"fp32": fp32, "bf16": bf16}

    return probe


def _choose(model, probe, runtime=None):
    layers = [resolve_layer(model, "3")]
    return choose_precision(model, layers, (64, 64), 4, runtime or Runtime(), probe=probe)


def test_bf16_chosen_only_when_the_probe_finds_it_faster(model, bf16_cpu):
    faster = _choose(model, _timings(1.0, 0.5))
    assert faster.precision == "bf16" and "2.0x faster" in faster.reason and "64 px, batch 4" in faster.reason
    slower = _choose(model, _timings(1.0, 12.0))  # bf16 emulated: the AMD EPYC case of issue 15
    assert slower.precision == "fp32" and "0.08x" in slower.reason
    marginal = _choose(model, _timings(1.0, 1.0 / (MARGIN - 0.05)))
    assert marginal.precision == "fp32"


def test_cpu_without_bf16_renders_fp32_without_probing(model, monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: set())
    choice = _choose(model, _never)
    assert choice.precision == "fp32" and "neither AMX nor AVX512-BF16" in choice.reason


def test_unknown_cpu_flags_are_probed(model, monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: None)
    assert _choose(model, _timings(1.0, 0.4)).precision == "bf16"
    assert _choose(model, _timings(1.0, 9.0)).precision == "fp32"


def test_explicit_precision_is_kept_and_trivial_work_stays_fp32(model, bf16_cpu):
    assert _choose(model, _never, Runtime(precision="fp32")).precision == "fp32"
    assert _choose(model, _never, Runtime(precision="bf16")).precision == "bf16"
    trivial = _choose(model, _timings(0.001, None))
    assert trivial.precision == "fp32" and "too little" in trivial.reason


def test_probe_results_are_cached_on_disk(model, bf16_cpu, tmp_path, monkeypatch):
    monkeypatch.setenv("FILTERSCOPE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(precision, "_MEMORY", {})
    monkeypatch.setattr(precision, "TRIVIAL_SECONDS", 0.0)  # probe bf16 even on this tiny stack
    layers = [resolve_layer(model, "3")]
    first = choose_precision(model, layers, (32, 32), 2, Runtime())
    assert not first.cached and set(first.timings) == {"fp32", "bf16"}
    stored = json.loads((tmp_path / CACHE_FILE).read_text())
    assert list(stored.values()) == [first.timings]
    monkeypatch.setattr(precision, "_MEMORY", {})  # a new process: read from the file, no probe
    monkeypatch.setattr(precision, "probe_timings", _never)
    again = choose_precision(model, layers, (32, 32), 2, Runtime())
    assert again.cached and again.timings == first.timings and again.precision == first.precision
    assert "cached probe" in again.reason
    (tmp_path / CACHE_FILE).write_text("{not json")  # damaged: measured again
    monkeypatch.setattr(precision, "_MEMORY", {})
    monkeypatch.setattr(precision, "probe_timings", _timings(1.0, 0.1))
    assert choose_precision(model, layers, (32, 32), 2, Runtime()).precision == "bf16"
    assert json.loads((tmp_path / CACHE_FILE).read_text())  # rewritten


@pytest.mark.parametrize("bf16_time, expected", [(0.3, "bf16"), (15.0, "fp32")])
def test_render_runs_and_records_the_chosen_precision(model, bf16_cpu, monkeypatch, bf16_time, expected):
    monkeypatch.setattr(precision, "_MEMORY", {})
    monkeypatch.setattr(precision, "_read_cache", lambda path: {})
    monkeypatch.setattr(precision, "_write_cache", lambda *args: None)
    monkeypatch.setattr(precision, "probe_timings", _timings(1.0, bf16_time))
    result = visualize_filters(model, "3", [0, 1], recipe=TINY)
    assert result.extra["precision"] == expected
    assert result.extra["precision_choice"].startswith("auto: bf16 ")
    exact = visualize_filters(model, "3", [0, 1], recipe=TINY, runtime=Runtime(precision=expected))
    torch.testing.assert_close(result.images, exact.images, rtol=0, atol=0)  # the chosen path, not another
