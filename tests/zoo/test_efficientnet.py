import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from filterscope import Recipe, layer_info, list_layers, load_model, visualize_filters
from filterscope.zoo.efficientnet import SameConv2d

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat


@pytest.mark.parametrize("size, expected_pad", [(8, (0, 1)), (9, (1, 1)), (10, (0, 1))])
def test_same_padding_matches_tensorflow(size, expected_pad):
    conv = SameConv2d(1, 1, 3, stride=2)
    x = torch.rand(1, 1, size, size)
    before, after = expected_pad
    reference = F.conv2d(F.pad(x, (before, after, before, after)), conv.weight, stride=2)
    assert conv(x).shape[-1] == -(-size // 2)  # ceil(size / 2), as TensorFlow's SAME
    assert torch.allclose(conv(x), reference)


@pytest.mark.integration
def test_default_model_sees_a_cat_in_chelsea(lite0):
    from skimage import data

    x = lite0.preprocessing.prepare(Image.fromarray(data.chelsea()))
    assert x.shape == (1, 3, 224, 224)
    with torch.no_grad():
        logits = lite0(x)
    top = int(logits.argmax())
    assert top in CAT_CLASSES, (top, lite0.categories[top])
    assert lite0.categories[281] == "tabby"


@pytest.mark.integration
def test_default_model_layers(lite0):
    assert layer_info(lite0, "_blocks.15").shape == (320, 7, 7)
    assert layer_info(lite0, "_relu1").shape == (1280, 7, 7)
    assert len([i for i in list_layers(lite0) if i.name.count(".") == 1 and i.name.startswith("_blocks")]) == 16


@pytest.mark.integration
@pytest.mark.parametrize("variant, size", [(1, 240), (2, 260)])
def test_bigger_lite_models_load_strictly(variant, size):
    model = load_model(f"efficientnet_lite{variant}")
    assert model.preprocessing.input_size == size
    assert "pytorch-model" in str(model.weights)


@pytest.mark.integration
def test_real_model_filter_rises_at_reduced_recipe(lite0):
    recipe = Recipe(scales=3, steps=6)
    result = visualize_filters(lite0, "_blocks.15", [164, 16], recipe=recipe, seed=0)
    assert result.images.shape == (2, 3, recipe.output_size, recipe.output_size)
    assert (result.values > 5 * result.initial_values.clamp(min=1.0)).all(), (result.initial_values, result.values)
