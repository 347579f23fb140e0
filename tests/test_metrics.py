import math

import pytest
import torch

from filterscope import channel
from filterscope.engine.transforms import LUCID_TRANSFORMS, TransformStack, random_affine
from filterscope.metrics import (
    activation_ratio,
    high_frequency_share,
    reference_crops,
    reference_max,
    robustness,
    score,
    transfer,
)

from .helpers.models import color_net


def test_high_frequency_share_known_answers():
    assert high_frequency_share(torch.full((3, 64, 64), 0.3)).item() == 0.0
    noise = torch.rand(8, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    assert high_frequency_share(noise).mean().item() == pytest.approx(0.75, abs=0.01)
    _y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    smooth = (0.5 + 0.4 * torch.sin(2 * math.pi * x / 32)).expand(3, 64, 64)  # 1/32 cycles per pixel
    fine = (0.5 + 0.4 * torch.sin(2 * math.pi * x / 3)).expand(3, 64, 64)  # 1/3 > 1/4
    assert high_frequency_share(smooth).item() < 1e-6
    assert high_frequency_share(fine).item() > 0.99


def test_activation_ratio_against_a_reference_set():
    model = color_net()
    red = torch.zeros(1, 3, 32, 32)
    red[:, 0] = 1.0
    gray = torch.full((2, 3, 32, 32), 0.5)
    crops = reference_crops(model, [_pil((200, 0, 0)), _pil((50, 50, 50))], crops_per_image=2)
    assert crops.shape == (6, 3, 32, 32)
    reference = reference_max(model, channel("act:0", 0).resolve(model), crops)
    assert reference == pytest.approx(200 / 255, abs=1e-5)
    assert activation_ratio(model, channel("act:0", 0), red, reference).item() == pytest.approx(255 / 200, abs=1e-4)
    ratios = activation_ratio(model, channel("act:0", 0), gray, reference).tolist()
    assert ratios == pytest.approx([0.5 * 255 / 200] * 2, abs=1e-3)


def _pil(color, size=(48, 40)):
    from PIL import Image

    return Image.new("RGB", size, color)


def test_robustness_of_a_flat_image_equals_its_ratio_and_a_dot_collapses():
    model = color_net()
    flat = torch.zeros(1, 3, 32, 32)
    flat[:, 0] = 0.8
    assert robustness(model, channel("act:0", 0), flat, 0.8).item() == pytest.approx(1.0, abs=1e-4)
    dot = torch.zeros(1, 3, 32, 32)
    dot[:, 1, 16, 16] = 1.0  # a single bright pixel drives the center neuron of the green channel...
    from filterscope import neuron

    base = activation_ratio(model, neuron("act:0", 1), dot, 1.0).item()
    moved = robustness(model, neuron("act:0", 1), dot, 1.0, samples=8).item()
    assert base == pytest.approx(1.0) and moved < 0.5  # ...but not once it moves


def test_score_and_transfer_fields():
    model = color_net()
    image = torch.zeros(1, 3, 32, 32)
    image[:, 2] = 1.0
    crops = reference_crops(model, [_pil((0, 0, 128))], crops_per_image=1)
    (quality,) = score(model, channel("act:0", 2), image, reference=crops, samples=4)
    assert quality.activation_ratio == pytest.approx(255 / 128, abs=1e-3)
    assert quality.high_frequency_share == 0.0 and quality.transfer_class is None
    assert transfer(model, image)[0][0] in range(5)


def test_transforms_keep_shape_and_are_seed_reproducible():
    images = torch.rand(3, 3, 40, 40)

    def generators(seed):
        return [torch.Generator().manual_seed(seed + i) for i in range(3)]

    out = LUCID_TRANSFORMS(images, generators(0))
    assert out.shape == (3, 3, 64, 64)  # padded by 12 on each side
    assert torch.equal(out, LUCID_TRANSFORMS(images, generators(0)))
    assert not torch.equal(out, LUCID_TRANSFORMS(images, generators(1)))
    assert torch.equal(TransformStack()(images, generators(0)), images)
    assert TransformStack.from_dict(LUCID_TRANSFORMS.to_dict()) == LUCID_TRANSFORMS


def test_transforms_are_differentiable_and_identity_at_zero():
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    same = random_affine(images, torch.zeros(2, 2), torch.ones(2), torch.zeros(2))
    assert torch.allclose(same, images, atol=1e-5)
    rotated = random_affine(images, torch.zeros(2, 2), torch.ones(2), torch.full((2,), 90.0))
    assert torch.allclose(rotated[0, 0], images[0, 0].detach().rot90(1, (0, 1)), atol=1e-4)
    rotated.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
