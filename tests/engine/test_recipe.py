import itertools

import pytest
import torch

from filterscope import PAPER_RECIPE, InvalidRecipeError, Recipe
from filterscope.engine.render import box_blur, start_noise, upscale


def test_paper_schedule_sizes_and_steps():
    assert PAPER_RECIPE.sizes() == [56, 67, 80, 96, 115, 138, 165, 198, 237, 284, 340, 408]
    assert PAPER_RECIPE.steps_per_scale() == [20] * 6 + [26] * 6
    assert PAPER_RECIPE.total_steps == 276
    assert PAPER_RECIPE.output_size == 408
    assert (PAPER_RECIPE.lr, PAPER_RECIPE.weight_decay, PAPER_RECIPE.blur) == (0.1, 1e-6, 5)


def test_single_scale_recipe_keeps_its_steps():
    fixed = PAPER_RECIPE.replace(size=224, scales=1, steps=276)
    assert fixed.sizes() == [224]
    assert fixed.steps_per_scale() == [276]


def test_odd_number_of_scales_puts_the_middle_scale_in_the_first_half():
    assert Recipe(scales=5, steps=10, late_steps_factor=2).steps_per_scale() == [10, 10, 10, 20, 20]


@pytest.mark.parametrize("changes, word", [
    ({"size": 0}, "size"), ({"scales": 0}, "scales"), ({"blur": 4}, "blur"), ({"lr": 0}, "lr"),
    ({"upscale": 0.5}, "upscale"), ({"steps": -1}, "steps"),
])
def test_invalid_recipes_are_rejected(changes, word):
    with pytest.raises(InvalidRecipeError, match=word):
        Recipe(**changes)


def test_recipe_dict_round_trip_and_unknown_field():
    assert Recipe.from_dict(PAPER_RECIPE.to_dict()) == PAPER_RECIPE
    with pytest.raises(InvalidRecipeError, match="stepz"):
        Recipe.from_dict({"stepz": 3})


def test_replace_ignores_none():
    assert PAPER_RECIPE.replace(steps=None, lr=0.05) == Recipe(lr=0.05)


def test_start_noise_range_and_reproducibility():
    a = start_noise(PAPER_RECIPE, 0, "channel(x, 1)")
    assert a.shape == (3, 56, 56)
    assert a.min() >= 128 / 255 and a.max() <= 148 / 255
    assert torch.equal(a, start_noise(PAPER_RECIPE, 0, "channel(x, 1)"))
    assert not torch.equal(a, start_noise(PAPER_RECIPE, 1, "channel(x, 1)"))
    assert not torch.equal(a, start_noise(PAPER_RECIPE, 0, "channel(x, 2)"))


def test_box_blur_matches_a_hand_computed_mean():
    image = torch.zeros(1, 1, 7, 7)
    image[0, 0, 3, 3] = 25.0
    blurred = box_blur(image, 5)
    assert blurred.shape == image.shape
    assert torch.allclose(blurred[0, 0, 1:6, 1:6], torch.ones(5, 5))  # the 5x5 window around the dot
    assert blurred[0, 0, 0, 0] == 0
    assert torch.allclose(box_blur(torch.full((1, 3, 9, 9), 0.3), 5), torch.full((1, 3, 9, 9), 0.3))


def test_upscale_keeps_flat_images_flat_and_reaches_the_size():
    out = upscale(torch.full((2, 3, 56, 56), 0.4), 67)
    assert out.shape == (2, 3, 67, 67)
    assert torch.allclose(out, torch.full_like(out, 0.4), atol=1e-6)


@pytest.mark.parametrize(("changes", "message"), [
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"upscale": float("nan")}, "upscale must be a finite number"),
    ({"late_steps_factor": float("inf")}, "late_steps_factor must be a finite number"),
    ({"weight_decay": float("nan")}, "weight_decay must be a finite number"),
    ({"size": 56.5}, "size must be a whole number"),
    ({"steps": 20.0}, "steps must be a whole number"),
    ({"blur": 5.0}, "blur must be a whole number"),
    ({"decorrelate": "no"}, "decorrelate must be true or false"),
    ({"noise_mean": "grey"}, "noise_mean must be a number"),
    ({"size": 100000}, "over 4096 px"),
    ({"size": 56, "scales": 60}, "over 4096 px"),
    ({"upscale": 1e300, "scales": 64}, "over 4096 px"),
    ({"scales": 1000}, "scales must be at most 64"),
    ({"size": 1, "scales": 2}, "blur of 5 px is too large for a 1 px image"),
    ({"size": 3, "scales": 1, "blur": 7, "blur_every": 2}, "blur of 7 px is too large for a 3 px image"),
])
def test_impossible_recipes_are_refused_before_any_work(changes, message):
    with pytest.raises(InvalidRecipeError, match=message):
        PAPER_RECIPE.replace(**changes)


def test_recipe_files_that_name_themselves_as_base_are_refused(tmp_path):
    from filterscope import get_recipe

    (tmp_path / "a.json").write_text(f'{{"base": "{tmp_path / "b.json"}"}}')
    (tmp_path / "b.json").write_text(f'{{"base": "{tmp_path / "a.json"}"}}')
    (tmp_path / "self.json").write_text(f'{{"base": "{tmp_path / "self.json"}"}}')
    for name in ("a.json", "self.json"):
        with pytest.raises(InvalidRecipeError, match="is its own base"):
            get_recipe(tmp_path / name)
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(InvalidRecipeError, match="Cannot read recipe file"):
        get_recipe(tmp_path / "deep.json")


def test_fields_added_later_are_written_only_when_set():
    from filterscope.engine.recipes import LATER_FIELDS

    written = PAPER_RECIPE.to_dict()
    assert not LATER_FIELDS & set(written)  # the JSON of earlier renders and atlas keys stays the same
    assert "lr_end" in Recipe(lr_end=0.1).to_dict()
    changed = Recipe(lr_end=0.1, warmup=3, transform_copies=2, blur_kind="gaussian")
    assert Recipe.from_dict(changed.to_dict()) == changed


@pytest.mark.parametrize(("changes", "message"), [
    ({"lr_end": 1.5}, "lr_end must be between 0 and 1"), ({"warmup": -1}, "warmup must not be negative"),
    ({"transform_copies": 0}, "transform_copies must be between 1 and 64"),
    ({"blur_kind": "median"}, "blur_kind must be one of box, gaussian"),
])
def test_new_fields_are_checked(changes, message):
    with pytest.raises(InvalidRecipeError, match=message):
        PAPER_RECIPE.replace(**changes)


def test_learning_rate_schedule():
    from filterscope.engine.render import Schedule

    constant = Schedule(((8, 8),), (10,))
    assert [constant.lr_factor(s, 10) for s in range(10)] == [1.0] * 10
    cosine = Schedule(((8, 8),), (11,), lr_end=0.1, warmup=2)
    factors = [cosine.lr_factor(s, 11) for s in range(11)]
    assert factors[:2] == pytest.approx([1 / 3, 2 / 3])  # warm-up
    assert factors[2] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1)
    assert factors[6] == pytest.approx(0.55)  # half-way down the cosine
    assert all(a >= b for a, b in itertools.pairwise(factors[2:]))


def test_gaussian_blur_keeps_the_mean_and_has_the_box_variance():
    from filterscope.engine.render import box_blur, gaussian_blur

    impulse = torch.zeros(1, 1, 41, 41)
    impulse[..., 20, 20] = 1
    offsets = torch.arange(41.0) - 20
    for kernel in (3, 5, 9):
        box, gauss = box_blur(impulse, kernel), gaussian_blur(impulse, kernel)
        assert gauss.sum() == pytest.approx(1.0, abs=1e-5)
        variance = lambda image: float((image.sum(dim=-2)[0, 0] * offsets**2).sum())  # noqa: E731
        assert variance(gauss) == pytest.approx(variance(box), rel=0.03)  # truncated at 3 sigma
    flat = torch.full((1, 3, 12, 12), 0.3)
    assert torch.allclose(gaussian_blur(flat, 5), flat)


def test_transform_copies_average_the_objective_over_copies():
    from filterscope import visualize_filters
    from filterscope.engine.recipes import RECIPES

    from ..helpers.models import small_net

    recipe = RECIPES["lucid"].replace(size=20, steps=6, reference_size=32)
    model = small_net()
    two = visualize_filters(model, "features.5", [1, 2], recipe=recipe.replace(transform_copies=3), seed=2)
    alone = visualize_filters(model, "features.5", [2], recipe=recipe.replace(transform_copies=3), seed=2)
    assert torch.allclose(two.images[1], alone.images[0], atol=1e-4)  # still independent of the batch
    one = visualize_filters(model, "features.5", [1, 2], recipe=recipe, seed=2)
    assert not torch.allclose(two.images, one.images, atol=1e-3)  # the copies changed the gradient
    assert (two.values > two.initial_values + 1).all()


def test_tiled_images_repeat_one_optimized_tile():
    from filterscope import visualize_filters
    from filterscope.engine.recipes import RECIPES

    from ..helpers.models import small_net

    recipe = RECIPES["filterscope"].replace(size=20, scales=2, upscale=1.6, steps=6, tiles=3, reference_size=32)
    result = visualize_filters(small_net(), "features.5", [1, 2], recipe=recipe, seed=0)
    images = result.images
    assert images.shape[-1] == 32 and (result.values > result.initial_values).all()
    tile = 11  # ceil(32 / 3)
    assert torch.equal(images[..., :tile, :tile], images[..., tile:2 * tile, tile:2 * tile])
    assert torch.equal(images[..., :10, :10], images[..., 2 * tile:, 2 * tile:])  # the last copy is cropped
    with pytest.raises(InvalidRecipeError, match="tiles must be between 1 and 16"):
        Recipe(tiles=0)


def test_transform_copies_refuse_batchwise_objectives():
    from filterscope import render
    from filterscope.engine.recipes import RECIPES

    from ..helpers.models import small_net

    recipe = RECIPES["lucid"].replace(size=20, steps=2, transform_copies=2, reference_size=32)
    with pytest.raises(InvalidRecipeError, match="transform_copies 1"):
        render(small_net(), "channel(features.5, 1) + diversity(features.5)", recipe=recipe, copies=2)
