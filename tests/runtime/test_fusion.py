"""Batch norms folded into convolutions (filterscope.runtime.fusion): the same function, on a copy, only where exact."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import filterscope as fs
from filterscope.layers import resolve_layer
from filterscope.runtime import Forward, Runtime
from filterscope.runtime.fusion import fold_batch_norms
from tests.helpers.models import PLAIN


def _bn(channels: int, seed: int) -> nn.BatchNorm2d:
    """A batch norm with running statistics and affine parameters far from the identity."""
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels)
    bn.running_mean.copy_(torch.randn(channels, generator=g))
    bn.running_var.copy_(torch.rand(channels, generator=g) + 0.5)
    bn.weight.data.copy_(torch.randn(channels, generator=g))
    bn.bias.data.copy_(torch.randn(channels, generator=g))
    return bn


class Branchy(nn.Module):
    """``a``→``bn_a``→relu (folds); ``b``→``bn_b`` where ``b``'s output is also added back (must not fold);
    ``c``→in-place +1→``bn_c`` (the batch norm's input is not the convolution's output: must not fold)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.bn_a, self.relu = nn.Conv2d(3, 4, 3, padding=1), _bn(4, 1), nn.ReLU()
        self.b, self.bn_b = nn.Conv2d(4, 4, 1, bias=False), _bn(4, 2)
        self.c, self.bn_c = nn.Conv2d(4, 4, 3, padding=1), _bn(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn_a(self.a(x)))
        y = self.b(x)
        x = self.bn_b(y) + y
        z = self.c(x)
        z.add_(1.0)
        return self.bn_c(z).mean(dim=(2, 3))


class StandardizedConv(nn.Conv2d):
    """A convolution whose forward standardizes its weights: folding the batch norm into them would be wrong."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class WeightStandardized(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn = StandardizedConv(3, 4, 3, padding=1), _bn(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)).mean(dim=(2, 3))


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_only_exact_pairs_fold_and_the_function_is_the_same():
    net = Branchy().eval()
    model = fs.wrap_model(net, preprocessing=PLAIN)
    folding = fold_batch_norms(model)
    assert folding.pairs == (("a", "bn_a"),)  # bn_b: b's output is read twice; bn_c: changed in place first
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folding.model.module(x), net(x), rtol=1e-5, atol=1e-5)
    assert isinstance(folding.model.module.bn_a, nn.Identity)


def test_the_callers_module_is_never_changed():
    net = Branchy().train()
    net.a.weight.requires_grad_(True)
    before, types = _state(net), [type(m) for m in net.modules()]
    model = fs.wrap_model(net, preprocessing=PLAIN)
    with Forward(model, [resolve_layer(model, "relu")], Runtime(precision="fp32"), fold=True) as forward:
        assert forward.model.module is not net and forward.folded == (("a", "bn_a"),)
        forward(torch.rand(1, 3, 32, 32))
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [type(m) for m in net.modules()] == types and net.training and net.a.weight.requires_grad


def test_a_captured_convolution_output_is_not_folded_away():
    model = fs.wrap_model(Branchy().eval(), preprocessing=PLAIN)
    assert fold_batch_norms(model, [resolve_layer(model, "a")]).pairs == ()
    assert fold_batch_norms(model, [resolve_layer(model, "bn_a")]).pairs == (("a", "bn_a"),)


def test_a_convolution_that_does_more_than_convolve_is_not_folded():
    folding = fold_batch_norms(fs.wrap_model(WeightStandardized().eval(), preprocessing=PLAIN))
    assert folding.pairs == () and "computes something else" in folding.reason


def test_the_copy_is_kept_until_the_weights_change():
    net = Branchy().eval()
    model = fs.wrap_model(net, preprocessing=PLAIN)
    first = fold_batch_norms(model).model.module
    assert fold_batch_norms(model).model.module is first
    with torch.no_grad():
        net.bn_a.bias.add_(1.0)  # the caller trains on: the folded copy must follow
    second = fold_batch_norms(model).model.module
    assert second is not first
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(second(x), net(x), rtol=1e-5, atol=1e-5)


def test_folded_and_plain_renders_give_the_same_images_in_fp32():
    model = fs.wrap_model(Branchy().eval(), preprocessing=PLAIN)
    recipe = fs.get_recipe("filterscope").replace(size=32, steps=12, relu_override_steps=0)
    objectives = [fs.Channel("relu", c) for c in range(4)]
    plain = fs.render(model, objectives, recipe=recipe, runtime=Runtime(precision="fp32", fold=False))
    folded = fs.render(model, objectives, recipe=recipe, runtime=Runtime(precision="fp32"))
    assert folded.extra["batch_norms"] == "1 folded into their convolutions" and "batch_norms" not in plain.extra
    torch.testing.assert_close(folded.images, plain.images, rtol=0, atol=1e-4)
    torch.testing.assert_close(folded.history, plain.history, rtol=1e-4, atol=1e-5)


@pytest.mark.integration
@pytest.mark.numerics
def test_lite0_folds_every_batch_norm_and_keeps_its_activations(lite0):
    ref = resolve_layer(lite0, "_blocks.15")
    before = _state(lite0.module)
    folding = fold_batch_norms(lite0, [ref])
    assert len(folding.pairs) == 49  # the stem, and each block's two or three convolutions up to the head
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        with Forward(lite0, [ref], Runtime(precision="fp32")) as plain:
            want = plain(x)[ref]
        with Forward(lite0, [ref], Runtime(precision="fp32"), fold=True) as folded:
            got = folded(x)[ref]
            assert folded.folded == folding.pairs
    assert got.shape == want.shape and not torch.equal(got, want)  # the folded copy ran (its accuracy: below)
    assert all(torch.equal(before[k], v) for k, v in lite0.module.state_dict().items())
    assert not any(isinstance(m, nn.Identity) for m in lite0.module.modules())


def _at_unit(module: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``_blocks.15``'s activations and the input gradient of its unit 16's mean, the network run in ``dtype``
    (both as float64)."""
    module = copy.deepcopy(module).to(dtype)
    seen: dict[str, torch.Tensor] = {}
    module.get_submodule("_blocks.15").register_forward_hook(lambda _m, _a, out: seen.setdefault("out", out))
    x = x.to(dtype).clone().requires_grad_(True)
    module(x)
    seen["out"][:, 16].mean().backward()
    assert x.grad is not None
    return seen["out"].detach().double(), x.grad.double()


def _relative(a: torch.Tensor, exact: torch.Tensor) -> float:
    return float((a - exact).norm() / exact.norm())


@pytest.mark.integration
@pytest.mark.numerics
def test_the_fold_is_exact_algebra(lite0):
    """A float64 network folds to the same function to float64 rounding: activations and input gradient. The
    bound is a thousandth of what float32 rounding already moves the activations (the unfolded network run in
    float32, measured here), so a fold that rounds through float32, or drops or misplaces ``eps``, fails."""
    wide = replace(lite0, module=copy.deepcopy(lite0.module).double())
    folding = fold_batch_norms(wide, [resolve_layer(lite0, "_blocks.15")])
    assert len(folding.pairs) == 49 and next(folding.model.module.parameters()).dtype == torch.float64
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    exact, exact_gradient = _at_unit(lite0.module, x, torch.float64)
    rounding = _relative(_at_unit(lite0.module, x, torch.float32)[0], exact)
    folded, folded_gradient = _at_unit(folding.model.module, x, torch.float64)
    assert 0 < _relative(folded, exact) < 1e-3 * rounding
    assert _relative(folded_gradient, exact_gradient) < 1e-3 * rounding


@pytest.mark.integration
@pytest.mark.numerics
def test_lite0_folded_in_float32_errs_no_more_than_one_more_rounding_of_the_plain_network(lite0):
    """A float32 network's folded weights are rounded to float32 once. That adds at most one rounding per
    weight to the plain float32 network's rounding at every multiply-add, so the folded activations may err
    against float64 at most twice as much as the plain float32 network's own (measured: 1.1-1.3x, with AVX2 and
    AVX-512 kernels alike). Input gradients are not compared entry by entry (see filterscope.runtime.fusion)."""
    folding = fold_batch_norms(lite0, [resolve_layer(lite0, "_blocks.15")])
    assert len(folding.pairs) == 49
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    exact = _at_unit(lite0.module, x, torch.float64)[0]
    plain = _relative(_at_unit(lite0.module, x, torch.float32)[0], exact)
    folded = _relative(_at_unit(folding.model.module, x, torch.float32)[0], exact)
    assert 0 < folded <= 2 * plain


def _mean_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


@pytest.mark.integration
@pytest.mark.numerics
@pytest.mark.parametrize("override", [0, 16])
def test_lite0_folded_render_is_as_near_the_plain_loop_as_float_rounding_puts_plain_loops(lite0, override):
    """One Adam step (its first update is the gradient's sign, so any rounding flips some signs and a longer run
    is chaotic: see benchmarks/RESULTS.md). Folding rounds each folded weight once, so the yardstick is the plain
    loop on the plain network with each convolution weight rounded once more (a random half-ulp, in float64):
    the folded render may lie at most twice as far from the plain loop (measured: 0.75-0.9x, with one thread or
    two; a reordering of the loop alone moves it 0-0.4x as far, so it is no yardstick)."""
    recipe = fs.get_recipe("filterscope").replace(steps=1, relu_override_steps=override)
    objectives = [fs.Channel("_blocks.15", c) for c in (16, 164)]

    def run(model: fs.LoadedModel = lite0, seed: int = 0, **runtime: object) -> fs.RenderResult:
        return fs.render(model, objectives, recipe=recipe, seed=seed, runtime=Runtime(precision="fp32", **runtime))

    plain, folded = run(fold=False), run()
    rounding = _mean_gap(plain.images, run(replace(lite0, module=_rounded_once(lite0.module)), fold=False).images)
    assert 0 < rounding < 0.05 * _mean_gap(plain.images, run(seed=1, fold=False).images)  # far below another picture
    assert _mean_gap(folded.images, plain.images) <= 2 * rounding  # (the values: a function of these images)


def _rounded_once(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose convolution weights are each rounded once more to float32, as a fold rounds them:
    multiplied by ``1 + u`` with ``u`` uniform in ±2^-24 (half a float32 ulp) in float64, then rounded."""
    module = copy.deepcopy(module)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for conv in (m for m in module.modules() if isinstance(m, nn.Conv2d)):
            wide = conv.weight.double()
            jitter = (2 * torch.rand(wide.shape, generator=generator, dtype=torch.float64) - 1) * 2.0 ** -24
            conv.weight.copy_((wide * (1 + jitter)).float())
    return module


def test_a_network_without_batch_norms_runs_as_it_is():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    model = fs.wrap_model(copy.deepcopy(net), preprocessing=PLAIN)
    folding = fold_batch_norms(model)
    assert folding.model is model and folding.pairs == () and folding.reason == "no batch norm to fold"


def test_the_relu_override_acts_on_the_folded_copy():
    """A unit dead at the start (its batch norm's bias far below zero) moves only through the redirected
    gradient: the folded copy's ReLUs must be the ones redirected."""
    net = Branchy().eval()
    with torch.no_grad():
        net.bn_a.bias[0] = -50.0
    model = fs.wrap_model(net, preprocessing=PLAIN)
    recipe = fs.get_recipe("filterscope").replace(size=32, steps=12, relu_override_steps=12)
    runs = {fold: fs.render(model, fs.Channel("relu", 0), recipe=recipe, runtime=Runtime(precision="fp32", fold=fold))
            for fold in (False, True)}
    assert runs[True].extra["relu_override"] == runs[False].extra["relu_override"] == "the first 12 steps"
    assert float(runs[True].images.std()) > 0.01  # it moved
    torch.testing.assert_close(runs[True].images, runs[False].images, rtol=0, atol=1e-4)


def test_the_folded_copy_is_cached_until_the_network_changes_in_any_way():
    net = Branchy().eval()
    model = fs.wrap_model(net, preprocessing=PLAIN)
    first = fold_batch_norms(model)
    assert fold_batch_norms(model).model.module is first.model.module  # unchanged: the same copy
    x = torch.rand(2, 3, 16, 16)

    def agrees(folding) -> bool:
        with torch.no_grad():
            return torch.allclose(folding.model.module(x), net(x), atol=1e-5)

    with torch.no_grad():
        net.bn_a.weight.mul_(2.0)  # in place: a new version
    second = fold_batch_norms(model)
    assert second.model.module is not first.model.module and agrees(second)
    net.a.weight.data = net.a.weight.data * 0.5  # .data assigned: same tensor, same version, other storage
    third = fold_batch_norms(model)
    assert third.model.module is not second.model.module and agrees(third)
    net.to(memory_format=torch.channels_last)  # what a render does around its batches: the same values
    assert fold_batch_norms(model).model.module is third.model.module


def test_a_network_run_by_another_capture_is_not_folded_then_and_folds_later():
    model = fs.wrap_model(Branchy().eval(), preprocessing=PLAIN)
    ref = resolve_layer(model, "relu")
    with Forward(model, [ref], Runtime(precision="fp32")):  # its hooks stop any other forward pass at relu
        busy = fold_batch_norms(model, [ref])
    assert busy.pairs == () and busy.reason == "not folded: the network is being run by another capture"
    assert fold_batch_norms(model, [ref]).pairs == (("a", "bn_a"),)  # not cached: alone, it folds
