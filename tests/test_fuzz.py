"""Property-based fuzzing of everything that parses user text: any input either works or raises a
FilterscopeError whose message is one line (what the CLI prints), never another exception."""

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import filterscope as fs
from filterscope.analysis import Box, parse_region
from filterscope.cli.options import parse_indices
from filterscope.runtime import parse_memory

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SYNTAX = "channel neuron class layer direction diversity relu ( ) [ ] , + - * . e 1 0 9 _blocks.15 a:0 x[1] @in "


def one_line(error: fs.FilterscopeError) -> None:
    message = str(error)
    assert message and "\n" not in message and len(message) < 2000, message


def text_from(alphabet: str) -> st.SearchStrategy[str]:
    tokens = alphabet.split(" ")
    return st.lists(st.sampled_from(tokens) | st.text(max_size=3), max_size=30).map("".join)


@FUZZ
@given(text_from(SYNTAX))
def test_objective_strings(text):
    try:
        objective = fs.parse_objective(text)
    except fs.FilterscopeError as error:
        one_line(error)
    else:
        assert fs.parse_objective(objective.description) == objective  # descriptions parse back


@FUZZ
@given(text_from("0 1 2 9 - , 16 266 0-7 7-0 -3 2000000000 x  "))
def test_filter_ranges(text):
    try:
        indices = parse_indices(text, "--filters")
    except fs.FilterscopeError as error:
        one_line(error)
    else:
        assert indices and len(indices) <= 65536 and all(isinstance(i, int) for i in indices)


@FUZZ
@given(text_from("eye = 1 , 2 10 % + . - face 0 100 x nan inf"))
def test_regions(text):
    try:
        name, boxes = parse_region(text)
    except fs.FilterscopeError as error:
        one_line(error)
    else:
        assert name and boxes and all(isinstance(b, Box) for b in boxes)
        for box in boxes:
            try:
                x0, y0, x1, y1 = box.pixels((100, 80))
            except fs.FilterscopeError as error:
                one_line(error)
            else:
                assert 0 <= x0 < x1 <= 100 and 0 <= y0 < y1 <= 80


@FUZZ
@given(text_from("1 0 . 5 12 G M K T B iB g k x - e 1e9 "))
def test_memory_sizes(text):
    try:
        size = parse_memory(text)
    except fs.FilterscopeError as error:
        one_line(error)
    else:
        assert isinstance(size, int) and size > 0


values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8) | st.sampled_from(["lucid", "none", "pixel", "fft", "maco", "affine", "paper"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8)
FIELDS = ["size", "scales", "upscale", "steps", "late_steps_factor", "lr", "weight_decay", "blur", "noise_mean",
          "noise_amplitude", "param", "decorrelate", "fft_decay", "transforms", "tv", "l1", "l2", "blur_every",
          "relu_override_steps", "reference_size", "name", "bogus"]


@pytest.mark.integration
@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS), values, max_size=5))
def test_recipe_dicts(changes):
    try:
        recipe = fs.Recipe.from_dict({**fs.PAPER_RECIPE.to_dict(), **changes})
    except fs.FilterscopeError as error:
        one_line(error)
    else:
        assert all(math.isfinite(v) for v in (recipe.lr, recipe.upscale, recipe.weight_decay, recipe.tv))
        assert recipe.output_size <= fs.engine.recipes.MAX_SIZE
        assert fs.Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe  # round-trips


@pytest.mark.parametrize("text", ["", " ", "channel(", "1e400*channel(a,1)", "(" * 200 + "1", "relu(3)",
                                  "channel(a, 1" + ")" * 50])
def test_known_hard_objective_strings(text):
    with pytest.raises(fs.FilterscopeError) as error:
        fs.parse_objective(text)
    one_line(error.value)
