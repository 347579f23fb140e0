"""Circuits: expanded weights against closed forms, class effects, attribution and the causal check."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import filterscope as fs
from filterscope.circuits import ablation_check, attribution, class_effects, expanded_weights, linearized
from filterscope.layers import resolve_layer

from ..helpers.models import PLAIN


def _seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator))
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
    return module.eval()


def _bn_scale(bn: nn.BatchNorm2d) -> torch.Tensor:
    return bn.weight / torch.sqrt(bn.running_var + bn.eps)


class ConvBnReluConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(5, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.bn(self.conv1(x))))


class Residual(nn.Module):
    """stem -> (x + conv_b(relu(bn(conv_a(x))))) -> relu."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.conv_a = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.conv_b = nn.Conv2d(6, 4, 3, padding=1)
        self.out = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.out(x + self.conv_b(F.relu(self.bn(self.conv_a(x)))))


class Depthwise(nn.Module):
    """stem -> 1x1 expand, BN, ReLU6 -> depthwise 3x3, BN, ReLU6 -> 1x1 project, BN (an inverted residual)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.expand = nn.Conv2d(4, 8, 1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.project = nn.Conv2d(8, 3, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(3)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.act(self.bn0(self.expand(x)))
        x = self.act(self.bn1(self.depthwise(x)))
        return self.bn2(self.project(x))


class FunctionalNet(nn.Module):
    """Activations and pooling written as functions in ``forward``: conv1 -> F.relu -> F.max_pool2d -> conv2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 2, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(F.max_pool2d(F.relu(self.conv1(x)), 2).relu())
        return self.fc(self.pool(x).flatten(1))


def _wrap(module: nn.Module, name: str, size: int = 16, **kwargs) -> fs.LoadedModel:
    preprocessing = fs.Preprocessing(input_size=size, resize_size=size, mean=(0.0,) * 3, std=(1.0,) * 3)
    return fs.wrap_model(_seeded(module), name=name, preprocessing=preprocessing, **kwargs)


def test_adjacent_convolutions_give_the_kernel_scaled_by_the_folded_batch_norm():
    model = _wrap(ConvBnReluConv(), "cbrc")
    found = expanded_weights(model, "conv1", "conv2")
    net = model.module
    expected = net.conv2.weight * _bn_scale(net.bn)[None, :, None, None]
    assert found.weights.shape == (4, 5, 3, 3)
    assert torch.allclose(found.weights, expected.detach(), atol=1e-5)
    assert found.origin == (7, 7) and found.centre == (8, 8)  # the 3x3 window around the centre of a 16x16 grid
    # the same map read the other way: conv1's unit 2 feeds conv2's units with these totals
    excite, inhibit = found.outputs(2, k=4)
    totals = expected.detach().sum(dim=(2, 3))[:, 2]
    assert [c.unit for c in excite] == [int(i) for i in torch.argsort(totals, descending=True) if totals[i] > 0]
    assert all(c.weight < 0 for c in inhibit) and all(c.weight > 0 for c in excite)


def test_residual_block_is_identity_plus_the_composed_kernels():
    model = _wrap(Residual(), "residual")
    net = model.module
    found = expanded_weights(model, "stem", "out")
    a = (net.conv_a.weight * _bn_scale(net.bn)[:, None, None, None]).detach()  # (6, 4, 3, 3)
    b = net.conv_b.weight.detach()  # (4, 6, 3, 3)
    composed = torch.zeros(4, 4, 5, 5)
    for p in range(3):
        for q in range(3):
            for r in range(3):
                for s in range(3):
                    composed[:, :, p + r, q + s] += torch.einsum("om,mi->oi", b[:, :, p, q], a[:, :, r, s])
    composed[:, :, 2, 2] += torch.eye(4)
    assert found.weights.shape == (4, 4, 5, 5)
    assert torch.allclose(found.weights, composed, atol=1e-5)


def test_depthwise_block_is_project_times_depthwise_times_expand():
    model = _wrap(Depthwise(), "depthwise")
    net = model.module
    e = (net.expand.weight[:, :, 0, 0] * _bn_scale(net.bn0)[:, None]).detach()  # (8, 4)
    d = (net.depthwise.weight[:, 0] * _bn_scale(net.bn1)[:, None, None]).detach()  # (8, 3, 3)
    p = (net.project.weight[:, :, 0, 0] * _bn_scale(net.bn2)[:, None]).detach()  # (3, 8)
    expected = torch.einsum("om,myx,mi->oiyx", p, d, e)
    found = expanded_weights(model, "stem", "bn2")
    assert torch.allclose(found.weights, expected, atol=1e-5)


def test_functional_relu_and_max_pool_are_linearized():
    model = _wrap(FunctionalNet(), "functional")
    net = model.module
    found = expanded_weights(model, "conv1", "conv2")
    # conv2 (1x1) after a 2x2 max pool -> 2x2 average pool: each of the 4 positions weighs a quarter
    expected = (net.conv2.weight.detach() / 4).expand(2, 4, 2, 2)
    assert found.weights.shape == (2, 4, 2, 2)
    assert torch.allclose(found.weights, expected, atol=1e-6)
    # without linearization, a ReLU at a zero input passes no gradient: the functional calls were caught
    with linearized():
        x = torch.zeros(3)
        assert torch.equal(F.relu(x - 1), x - 1)


def test_linear_path_equals_the_true_jacobian():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AvgPool2d(2), nn.Conv2d(4, 3, 3, padding=1))
    model = _wrap(net, "linear", size=12)
    found = expanded_weights(model, "0", "2")
    a = torch.randn(1, 4, 12, 12)
    jac = torch.autograd.functional.jacobian(lambda t: model.module[2](model.module[1](t))[0, :, 3, 3], a)
    jac = jac[:, 0]  # (3, 4, 12, 12)
    y0, x0 = found.origin
    kh, kw = found.kernel_size
    assert found.centre == (3, 3)
    assert torch.allclose(found.weights, jac[:, :, y0:y0 + kh, x0:x0 + kw], atol=1e-6)
    mask = torch.ones_like(jac, dtype=torch.bool)
    mask[:, :, y0:y0 + kh, x0:x0 + kw] = False
    assert jac[mask].abs().max() == 0  # the crop holds every non-zero entry


def test_a_span_cut_by_the_border_grows_the_input():
    net = nn.Sequential(*[nn.Conv2d(3, 3, 5, padding=2) for _ in range(3)])
    model = _wrap(net, "deep", size=8)
    found = expanded_weights(model, "0", "2")
    assert found.kernel_size == (9, 9) and found.input_size[0] > 8


def test_source_must_come_first_and_unknown_layers_are_named():
    model = _wrap(ConvBnReluConv(), "cbrc")
    with pytest.raises(fs.UnknownLayerError, match="does not run before"):
        expanded_weights(model, "conv2", "conv1")
    with pytest.raises(fs.UnknownLayerError, match="conv3"):
        expanded_weights(model, "conv1", "conv3")


def test_class_effects_equal_the_reverse_mode_jacobian_and_carry_names():
    model = _wrap(FunctionalNet(), "functional", categories=("cat", "dog", "fox"))
    effects = class_effects(model, "conv1", [0, 3])
    full = expanded_weights(model, "conv1", "").totals  # (3 classes, 4 units), by reverse mode
    assert torch.allclose(effects.effects, full[:, [0, 3]].T, atol=1e-6)
    # closed form: fc . avgpool . conv2 . avgpool2x2, a unit added everywhere adds conv2's weight to each output
    net = model.module
    expected = net.fc.weight.detach() @ net.conv2.weight.detach()[:, :, 0, 0]  # (3, 4)
    assert torch.allclose(effects.effects, expected[:, [0, 3]].T, atol=1e-5)
    promoted, suppressed = effects.top(0, k=3)
    assert {c.name for c in promoted + suppressed} <= {"cat", "dog", "fox"}
    assert all(c.weight > 0 for c in promoted) and all(c.weight < 0 for c in suppressed)


# ----------------------------------------------------------------------------------------- evidence
class TwoCarry(nn.Module):
    """16 equal non-negative feature channels; the unit reads channels 0 and 1 strongly (or all equally)."""

    def __init__(self, equal: bool) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 16, 1)
        self.relu = nn.ReLU()
        self.unit = nn.Conv2d(16, 1, 1, bias=False)
        with torch.no_grad():
            self.features.weight.fill_(0.0)
            self.features.bias.fill_(0.0)
            for c in range(16):  # every channel the same brightness detector: equal activations
                self.features.weight[c] = 1.0 / 3
            self.unit.weight.fill_(1.0 if equal else 0.02)
            if not equal:
                self.unit.weight[0, :2] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unit(self.relu(self.features(x)))


def _check(equal: bool) -> fs.circuits.AblationCheck:
    model = fs.wrap_model(TwoCarry(equal).eval(), name="carry", preprocessing=PLAIN)
    pixels = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    source, target = resolve_layer(model, "relu"), resolve_layer(model, "unit")
    scores = attribution(model, source, target, 0, pixels)
    top = torch.argsort(scores, descending=True)[:2].tolist()
    return ablation_check(model, source, target, 0, pixels, {"attribution": top}, channels=16, draws=6, seed=1)


def test_ablation_ratio_is_high_when_two_inputs_carry_the_unit():
    check = _check(equal=False)
    assert sorted(check.ablated["attribution"]) == [0, 1]
    # the unit is (1 + 1 + 14 * 0.02) * b at the maximum: zeroing 0 and 1 removes 2 / 2.28 of it, a random
    # set the sum of its weights over 2.28
    assert check.drops["attribution"] == pytest.approx(check.baseline * 2 / 2.28, rel=1e-5)
    weight = lambda c: 1.0 if c < 2 else 0.02  # noqa: E731
    random = [sum(weight(c) for c in chosen) / 2.28 * check.baseline for chosen in check.random_sets]
    assert check.random_drops == pytest.approx(random, rel=1e-4)
    assert check.ratios["attribution"] == pytest.approx(check.drops["attribution"] / (sum(random) / 6), rel=1e-4)
    assert check.ratios["attribution"] > 3


def test_ablation_ratio_is_one_when_all_inputs_contribute_equally():
    check = _check(equal=True)
    assert check.drops["attribution"] == pytest.approx(check.baseline / 8, rel=1e-5)
    assert check.ratios["attribution"] == pytest.approx(1.0, rel=1e-4)


def test_attribution_is_activation_times_gradient_at_the_maximum():
    model = fs.wrap_model(TwoCarry(False).eval(), name="carry", preprocessing=PLAIN)
    pixels = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    source, target = resolve_layer(model, "relu"), resolve_layer(model, "unit")
    scores = attribution(model, source, target, 0, pixels)
    # linear after the ReLU: a_i * w_i at the maximum's position, i.e. w_i times the brightest pixel mean
    brightest = pixels.mean(dim=1).flatten(1).amax(dim=1).mean()
    weights = model.module.unit.weight[0, :, 0, 0].detach()
    assert torch.allclose(scores, weights * brightest, atol=1e-5)


def test_circuit_of_a_tiny_model_lists_inputs_classes_and_the_check():
    model = _wrap(FunctionalNet(), "functional", categories=("cat", "dog", "fox"))
    pixels = torch.rand(10, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    found = fs.circuit(model, "conv2", 1, "conv1", k=3, images=pixels, exemplars=4, ablate=2, draws=3)
    assert found.exemplars == 4 and found.kernel_size == (2, 2)
    assert len(found.excite) + len(found.inhibit) <= 6 and all(c.attribution is not None for c in found.excite)
    assert found.ablation is not None and set(found.ablation.ratios) == {"expanded", "attribution"}
    assert {c.name for c in found.promoted + found.suppressed} <= {"cat", "dog", "fox"}
    data = found.to_dict()
    assert data["inputs"]["excite"][0]["kernel"] and "attribution" in data["inputs"]["excite"][0]
    with pytest.raises(fs.ChannelError):
        fs.circuit(model, "conv2", 7, "conv1")


def test_fanned_ablation_equals_the_plain_way_and_is_refused_where_a_skip_bypasses_the_source():
    from filterscope.circuits.evidence import _fanned_values, _fans_out, _plain_values

    model = fs.wrap_model(TwoCarry(False).eval(), name="carry", preprocessing=PLAIN)
    pixels = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    source, target = resolve_layer(model, "relu"), resolve_layer(model, "unit")
    sets = [[], [0], [1, 2], [3, 4, 5]]
    positions = [(i, i) for i in range(5)]
    assert _fans_out(model, source, target, pixels, 0, positions)
    assert torch.allclose(_fanned_values(model, source, target, pixels, 0, positions, sets),
                          _plain_values(model, source, target, pixels, 0, positions, sets), atol=1e-6)
    residual = _wrap(Residual(), "residual")  # conv_a's output meets the stem's (the skip) after it
    pixels = torch.rand(3, 3, 16, 16)
    a, b = resolve_layer(residual, "conv_a"), resolve_layer(residual, "out")
    assert not _fans_out(residual, a, b, pixels, 0, [(8, 8)] * 3)
    check = ablation_check(residual, a, b, 0, pixels, {"top": [0, 1]}, channels=6, draws=2, positions=[(8, 8)] * 3)
    manual = _plain_values(residual, a, b, pixels, 0, [(8, 8)] * 3, [[], [0, 1]]).mean(dim=1)
    assert check.drops["top"] == pytest.approx(float(manual[0] - manual[1]), rel=1e-5)


# ------------------------------------------------------------------------------------- the embedded model
@pytest.mark.integration
def test_embedded_block_15_equals_its_folded_weights_and_attribution_explains_a_unit(lite0):
    block = lite0.module._blocks[15]
    e = block._expand_conv.weight.detach()[:, :, 0, 0] * _bn_scale(block._bn0).detach()[:, None]  # (1152, 192)
    d = block._depthwise_conv.weight.detach()[:, 0] * _bn_scale(block._bn1).detach()[:, None, None]  # (1152, 3, 3)
    p = block._project_conv.weight.detach()[:, :, 0, 0] * _bn_scale(block._bn2).detach()[:, None]  # (320, 1152)
    found = expanded_weights(lite0, "_blocks.14", "_blocks.15")
    expected = torch.einsum("om,myx,mi->oiyx", p, d, e)
    assert found.weights.shape == (320, 192, 3, 3)
    assert torch.allclose(found.weights, expected, atol=1e-5 * float(expected.abs().max()))
    pixels = fs.reference_crops(lite0)[::6]  # 15 photos and crops
    circuit = fs.circuit(lite0, "_blocks.15", 16, "_blocks.14", k=5, images=pixels, exemplars=6, draws=3,
                         weights=found)
    assert circuit.ablation is not None and circuit.ablation.ratios["attribution"] > 2
    assert circuit.promoted and all(c.name for c in circuit.promoted)  # ImageNet's class names
