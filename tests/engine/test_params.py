import dataclasses
import json

import pytest
import torch
from torch import nn

import filterscope as fs
from filterscope import InvalidRecipeError, Preprocessing, Recipe, visualize_filters
from filterscope.engine.params import FourierParam, MacoParam, PixelParam, initial_state, make_param
from filterscope.engine.recipes import RECIPES, get_recipe

from ..helpers.models import small_net

IMAGES = 0.1 + 0.8 * torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(0))


def test_pixel_round_trip():
    assert torch.allclose(PixelParam(IMAGES, Preprocessing())(), IMAGES, atol=1e-6)


@pytest.mark.parametrize("decorrelate", [False, True])
def test_fourier_round_trip_range_and_size(decorrelate):
    param = FourierParam(initial_state("fft", IMAGES, decorrelate=decorrelate), decay=1.0, decorrelate=decorrelate)
    out = param()
    assert out.shape == IMAGES.shape
    assert torch.allclose(out, IMAGES, atol=1e-4)
    with torch.no_grad():
        param.spectrum.mul_(50)  # whatever the parameters, the image stays in (0, 1)
    assert param().min() >= 0 and param().max() <= 1


def test_maco_keeps_the_natural_magnitude_and_range():
    param = MacoParam(IMAGES)
    out = param()
    assert out.shape == IMAGES.shape and out.min() > 0 and out.max() < 1
    with torch.no_grad():
        param.phase.add_(torch.rand_like(param.phase))  # any phase: same magnitude spectrum, still in (0, 1)
    assert param().min() > 0 and param().max() < 1
    assert len(list(param.parameters())) == 1  # only the phase is optimized


def test_unknown_param():
    with pytest.raises(InvalidRecipeError, match="Unknown parameterization 'wavelet'. Choices: cppn, fft, maco, pixel"):
        make_param("wavelet", IMAGES, Preprocessing())
    with pytest.raises(InvalidRecipeError, match="Choices: cppn, fft, maco, pixel"):
        initial_state("wavelet", IMAGES)
    with pytest.raises(InvalidRecipeError, match="param must be one of"):
        Recipe(param="wavelet")


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_named_recipe_raises_the_activation(name):
    # reference_size=32: the recipe's pixel numbers are meant for this 32 px model as they are
    recipe = RECIPES[name].replace(size=16, scales=min(RECIPES[name].scales, 2), steps=16, reference_size=32)
    result = visualize_filters(small_net(), "features.5", [3], recipe=recipe, seed=0)
    assert result.values[0] > 1.5 * result.initial_values[0]
    assert result.images.shape[-1] == recipe.output_size


@pytest.mark.parametrize("param", ["fft", "maco"])
def test_batch_equals_one_by_one_with_transforms(param):
    recipe = RECIPES["lucid"].replace(size=20, steps=6, param=param)
    model = small_net()
    together = visualize_filters(model, "features.5", [1, 2, 3], recipe=recipe, seed=2)
    alone = visualize_filters(model, "features.5", [2], recipe=recipe, seed=2)
    assert torch.allclose(together.images[1], alone.images[0], atol=1e-4)


def test_recipe_files(tmp_path):
    js = tmp_path / "mine.json"
    js.write_text(json.dumps({"base": "lucid", "steps": 64, "transforms": {"pad": 4, "jitter": 2}}))
    recipe = get_recipe(js)
    assert recipe.name == "mine" and recipe.steps == 64 and recipe.param == "fft"
    assert recipe.transforms.pad == 4 and recipe.transforms.scales == ()
    toml = tmp_path / "t.toml"
    toml.write_text('base = "paper"\nscales = 3\nlr = 0.05\n')
    assert get_recipe(toml).sizes() == [56, 67, 80] and get_recipe(toml).lr == 0.05
    assert Recipe.from_dict(RECIPES["lucid"].to_dict()) == RECIPES["lucid"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"stepz": 3}')
    with pytest.raises(InvalidRecipeError, match="stepz"):
        get_recipe(bad)
    with pytest.raises(InvalidRecipeError, match="Did you mean 'lucid'"):
        get_recipe("lucd")


@pytest.mark.parametrize("param", ["pixel", "fft"])  # maco is not invertible: its magnitude is fixed
def test_set_state_round_trips(param):
    from filterscope.engine.params import initial_state

    state = initial_state(param, IMAGES, decorrelate=True)
    module = make_param(param, state, Preprocessing(), decorrelate=True)
    before = module().detach().clone()
    module.set_state(module.state())
    assert torch.allclose(module(), before, atol=1e-4)


def test_periodic_blur_smooths_the_result():
    from filterscope.metrics import high_frequency_share

    recipe = Recipe(size=32, scales=1, steps=12, blur=3, reference_size=32)
    model = small_net()
    sharp = visualize_filters(model, "features.1", [2], recipe=recipe, seed=0)
    smooth = visualize_filters(model, "features.1", [2], recipe=recipe.replace(blur_every=3), seed=0)
    assert high_frequency_share(smooth.images) < 0.8 * high_frequency_share(sharp.images)
    with pytest.raises(InvalidRecipeError, match="blur_every"):
        Recipe(blur=0, blur_every=2)


def test_cppn_draws_smooth_images_at_any_size_from_its_weights():
    from filterscope.engine.params import CPPNParam
    from filterscope.metrics import high_frequency_share

    state = initial_state("cppn", IMAGES)
    assert state.shape[0] == 2 and state.dim() == 2
    assert not torch.equal(state[0], state[1])  # each image's own starting weights, from its own noise
    assert torch.equal(initial_state("cppn", IMAGES[1:]), state[1:])  # not from its batch
    start = make_param("cppn", state, Preprocessing(), size=(24, 20))()
    assert start.shape == (2, 3, 24, 20) and torch.allclose(start, torch.full_like(start, 0.5))  # Lucid: gray
    param = make_param("cppn", state, Preprocessing(), size=(24, 20))
    with torch.no_grad():
        for weight in param.parameters():
            weight.add_(0.3 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)))
    drawn = param()
    assert drawn.min() >= 0 and drawn.max() <= 1 and drawn.std() > 0.05
    big = CPPNParam(param.state(), Preprocessing(), size=(96, 80))()  # the same weights drawn 4x larger
    shrunk = torch.nn.functional.interpolate(big, size=(24, 20), mode="area")
    assert (shrunk - drawn).abs().mean() < 0.05  # resolution-free: the same picture
    assert (high_frequency_share(big) < 0.1).all()
    param.set_state(state)
    assert torch.allclose(param(), start)


@pytest.mark.integration
def test_cppn_recipe_renders_across_scales_and_refuses_a_periodic_blur():
    recipe = RECIPES["cppn"].replace(size=16, scales=2, upscale=2.0, steps=12, lr=0.02, reference_size=32)
    result = visualize_filters(small_net(), "features.5", [3, 4], recipe=recipe, seed=0)
    assert result.images.shape[-1] == 32 and (result.values > result.initial_values + 0.1).all()
    alone = visualize_filters(small_net(), "features.5", [4], recipe=recipe, seed=0)
    assert torch.allclose(result.images[1], alone.images[0], atol=1e-4)
    with pytest.raises(InvalidRecipeError, match="cppn has no image state to blur"):
        Recipe(param="cppn", blur_every=2)


@pytest.mark.parametrize("recipe", fs.list_recipes())
def test_every_named_recipe_renders_a_grayscale_model(recipe):
    # colour decorrelation (the fft recipes) is an RGB notion: a 1-channel model is optimized in its channel
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    model = fs.wrap_model(net, name="gray", preprocessing=fs.Preprocessing(input_size=16, resize_size=16,
                                                                            mean=(0.5,), std=(0.5,)))
    chosen = dataclasses.replace(fs.get_recipe(recipe), size=16, scales=1, steps=3, reference_size=None)
    result = fs.render(model, fs.channel("1", 2), recipe=chosen)
    assert result.images.shape == (1, 1, 16, 16) and torch.isfinite(result.images).all()
