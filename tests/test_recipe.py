import pytest
import torch

from filterscope import PAPER_RECIPE, InvalidRecipeError, Recipe
from filterscope.render import box_blur, start_noise, upscale


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
