"""What an image is made of: the semantic dictionary, neuron groups and spatial attribution against brute force
and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import filterscope as fs

PLAIN16 = fs.Preprocessing(input_size=16, resize_size=16, mean=(0.0,) * 3, std=(1.0,) * 3)


class Head(nn.Module):
    """conv 3x3 -> ReLU ("features") -> 1x1 conv ("mix", signed) -> global average pool -> linear (4 classes)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.features = nn.ReLU()
        self.mix = nn.Conv2d(6, 5, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.mix(self.features(self.conv(x)))).flatten(1))


def _model() -> fs.LoadedModel:
    return fs.wrap_model(Head().eval(), name="head", preprocessing=PLAIN16, categories=("a", "b", "c", "d"))


def _photo(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8))


def _two_regions() -> Image.Image:
    """Two flat colours (left, right): every layer's activation matrix has two distinct rows away from the edge."""
    array = np.zeros((16, 16, 3), dtype=np.uint8)
    array[:, :8] = (200, 40, 90)
    array[:, 8:] = (30, 160, 220)
    return Image.fromarray(array)


def test_the_dictionary_is_the_top_units_at_each_position():
    model = _model()
    found = fs.semantic_dictionary(model, _photo(), "features", k=3)
    acts = found.activations
    assert found.units.shape == (16, 16, 3)
    for y in range(16):
        for x in range(16):
            column = acts[:, y, x]
            expected = sorted(range(6), key=lambda c: (-float(column[c]), c))[:3]
            assert found.units[y, x].tolist() == expected
            assert torch.allclose(found.values[y, x], column[found.units[y, x]])
            assert found.values[y, x].tolist() == sorted(found.values[y, x].tolist(), reverse=True)
    y, x = found.strongest(1)[0]
    assert found.values[y, x, 0] == found.values[..., 0].max()
    with pytest.raises(fs.FilterscopeError, match="k must be at least 1"):
        fs.semantic_dictionary(model, _photo(), "features", k=0)


def test_groups_are_non_negative_and_reconstruct_the_share_they_report():
    model = _model()
    groups = fs.neuron_groups(model, _photo(), "features", n=3)
    assert groups.part == "positive" and not groups.signed and len(groups) == 3
    assert (groups.spatial >= 0).all() and (groups.factors >= 0).all()
    acts = fs.explain.layer_activations(model, _photo(), "features")[3]
    matrix = acts.flatten(1).T.clamp(min=0)
    rebuilt = groups.spatial.flatten(1).T @ groups.factors
    share = 1 - float(((matrix - rebuilt) ** 2).sum() / (matrix ** 2).sum())
    assert groups.explained == pytest.approx(share, abs=1e-4)
    more = fs.neuron_groups(model, _photo(), "features", n=6)  # as many groups as units: (nearly) exact
    assert more.explained > max(groups.explained, 0.99)


def test_signed_layers_are_split_into_positive_and_negative_parts():
    model = _model()
    positive = fs.neuron_groups(model, _photo(), "mix", n=2)
    split = fs.neuron_groups(model, _photo(), "mix", n=2, part="split")
    assert positive.signed and split.signed
    assert split.factors.shape == (2, 10) and split.channels.shape == (2, 5)
    assert torch.allclose(split.channels, split.factors[:, :5] - split.factors[:, 5:])
    with pytest.raises(fs.FilterscopeError, match="positive or split"):
        fs.neuron_groups(model, _photo(), "mix", part="both")


def test_attribution_is_complete_for_a_linear_head_and_splits_over_exact_groups():
    model = _model()
    found = fs.spatial_attribution(model, _photo(), "mix")
    with torch.no_grad():
        logits = model.module(torch.from_numpy(np.array(_photo())).permute(2, 0, 1)[None].float() / 255)
    assert found.target == int(logits.argmax()) and found.name == "abcd"[found.target]
    bias = float(model.module.fc.bias.detach()[found.target])
    assert found.total == pytest.approx(found.logit - bias, rel=1e-5, abs=1e-6)  # pool + linear: complete
    assert float(found.units.sum()) == pytest.approx(found.total, rel=1e-5, abs=1e-6)
    chosen = fs.spatial_attribution(model, _photo(), "mix", target=2)
    assert chosen.target == 2 and chosen.name == "c"
    # a group's share is its part of the rebuilt activations times the gradient; at "features" (>= 0, the head after
    # it linear) groups that rebuild nearly all of the activations share nearly all of the attribution
    at_features = fs.spatial_attribution(model, _two_regions(), "features", target=1)
    groups = fs.neuron_groups(model, _two_regions(), "features", n=4)
    shares = at_features.of_groups(groups)
    for g in range(len(groups)):
        part = groups.spatial[g][None] * groups.factors[g][:, None, None]  # (C, H, W)
        assert float(shares[g]) == pytest.approx(float((part * at_features.gradient).sum()), rel=1e-4, abs=1e-6)
    assert groups.explained > 0.99
    assert float(shares.sum()) == pytest.approx(at_features.total, rel=0.05)
    with pytest.raises(fs.ChannelError, match="which has 4 classes"):
        fs.spatial_attribution(model, _photo(), "mix", target=4)


@pytest.mark.integration
def test_the_embedded_model_on_the_cat(lite0):
    from skimage import data

    cat = Image.fromarray(data.chelsea())
    found = fs.spatial_attribution(lite0, cat, "_blocks.15")
    assert found.name in {"tabby", "tiger cat", "Egyptian cat"} and found.map.shape == (7, 7)
    dictionary = fs.semantic_dictionary(lite0, cat, "_blocks.10", k=4)
    assert dictionary.units.shape == (14, 14, 4)
    groups = fs.neuron_groups(lite0, cat, "_blocks.15", n=6)
    assert groups.converged and groups.explained > 0.5 and groups.signed  # block outputs are signed
    assert found.of_groups(groups).shape == (6,)


# ------------------------------------------------------------------------------------- seeded renders
def _fast(steps: int = 96) -> fs.Recipe:
    return fs.explain.SEEDED.replace(steps=steps)


def test_inversion_matches_the_image_activations():
    model = _model()
    result = fs.explain.invert(model, _photo(), "features", recipe=_fast())
    assert result.images.shape == (1, 3, 16, 16)
    assert float(result.initial_values[0]) < 0.9 <= float(result.values[0])  # the cosine with the image's


def test_caricature_raises_its_objective_from_the_image():
    model = _model()
    result = fs.explain.caricature(model, _photo(), "features", recipe=_fast())
    assert float(result.values[0]) > float(result.initial_values[0])
    # it started from the image: its first value is the image's own dot-cosine, |a|^2 / (C*H*W)
    acts = fs.explain.layer_activations(model, _photo(), "features")[3]
    assert float(result.initial_values[0]) == pytest.approx(float((acts ** 2).mean()), rel=0.05)


def test_accentuation_raises_the_unit_and_keeps_the_earlier_layer_close():
    model = _model()
    photo = _photo()
    free = fs.explain.accentuate(model, photo, "mix", 1, keep="conv", weight=0.0, recipe=_fast(64))
    kept = fs.explain.accentuate(model, photo, "mix", 1, keep="conv", weight=50.0, recipe=_fast(64))

    def unit_and_distance(images: torch.Tensor) -> tuple[float, float]:
        image = fs.to_pil(images[0])
        unit = float(fs.explain.layer_activations(model, image, "mix")[3][1].mean())
        distance = float(((fs.explain.layer_activations(model, image, "conv")[3]
                           - fs.explain.layer_activations(model, photo, "conv")[3]) ** 2).mean())
        return unit, distance

    start = float(fs.explain.layer_activations(model, photo, "mix")[3][1].mean())
    free_unit, free_distance = unit_and_distance(free.images)
    kept_unit, kept_distance = unit_and_distance(kept.images)
    assert free_unit > start and kept_unit > start
    assert kept_distance < free_distance
    with pytest.raises(fs.FilterscopeError, match="weight must be at least 0"):
        fs.explain.accentuate(model, photo, "mix", 1, keep="conv", weight=-1)
