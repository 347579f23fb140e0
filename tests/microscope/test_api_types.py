"""The Python API is an input surface too: every public function checks its arguments against their
annotations, so a wrong-typed argument is a clear FilterscopeError naming the function and the argument
(not an AttributeError from deep inside), and the functions that take images take one image or many."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from PIL import Image

import filterscope as fs
from filterscope.arguments import accepts, resolved_hints, unresolved

from ..helpers.models import color_net, colour_independent, save_photos

PLAUSIBLE = {"layer": "conv2", "layers": ["conv2"], "spec": "conv2", "filters": [0], "objectives": "channel(conv2, 0)",
             "objective": "channel(conv2, 0)", "image": "cat.jpg", "images": ["cat.jpg"], "unit": 0, "units": [0],
             "variants": {"all": []}, "atlas": "out/atlas", "recipe": fs.PAPER_RECIPE, "layer_spec": "conv2",
             "shape": (32, 32), "batch": 1, "runtime": fs.Runtime(), "source": "conv1", "target": "conv2",
             "keep": "conv1", "independent": None}


def model_functions() -> list[str]:
    """The public functions whose first parameter is a model (not a model's name, as reload_model's)."""
    names = []
    for name in fs.__all__:
        obj = getattr(fs, name)
        if inspect.isfunction(obj):
            parameters = list(inspect.signature(obj).parameters.values())
            if parameters and parameters[0].name == "model" and "LoadedModel" in str(parameters[0].annotation):
                names.append(name)
    return names


def test_the_walk_covers_the_model_functions():
    names = model_functions()
    assert len(names) >= 25 and {"render", "rank_filters", "list_layers", "layer_info", "trust_units"} <= set(names)


@pytest.mark.parametrize("name", model_functions())
@pytest.mark.parametrize("wrong", [42, "efficientnet_lite0", object()])
def test_a_wrong_typed_model_is_a_clear_error(name, wrong, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    function = getattr(fs, name)
    positional, keywords = arguments_for(function, "model", wrong)
    with pytest.raises(fs.ArgumentTypeError, match=f"model must be .*, not {type(wrong).__name__}"):
        function(*positional, **keywords)  # at the call: iter_render's generator is not started


def test_an_argument_type_error_is_also_a_type_error():
    with pytest.raises(TypeError, match="fs.wrap_model: module must be a torch.nn.Module, not int"):
        fs.wrap_model(3)


def test_rank_filters_takes_one_image_as_well_as_many():
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    one = fs.rank_filters(color_net(), image, "conv1", k=2)
    many = fs.rank_filters(color_net(), [image], "conv1", k=2)
    assert one.top == many.top and one.means.tolist() == many.means.tolist() and len(one.images) == 1


def public_functions() -> list[str]:
    return [name for name in fs.__all__ if inspect.isfunction(getattr(fs, name))]


def test_every_public_function_is_checked_and_every_annotation_resolves():
    names = public_functions()
    assert len(names) >= 55
    assert [n for n in names if not getattr(getattr(fs, n), "__checked__", False)] == []
    assert {n: unresolved(getattr(fs, n)) for n in names if unresolved(getattr(fs, n))} == {}


WRONG = ("x", 42, 2.5, [object()], object())


@functools.cache
def pool() -> tuple[object, ...]:
    """Values of every kind the public functions take, to find one an annotation accepts."""
    from filterscope.zoo.weights import UrlWeights

    model = color_net()
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    result = fs.render(model, "channel(conv2, 0)", recipe=fs.PAPER_RECIPE.replace(size=16, scales=1, steps=1))
    return (None, color_net(), model.module, model.preprocessing, model.weights, UrlWeights("http://127.0.0.1/w.pth"),
            "conv2", 0, 1.0, True, [0], ["conv2"], (32, 32), fs.PAPER_RECIPE, fs.Runtime(), image,
            torch.zeros(1, 3, 32, 32), lambda *a: None, {}, result, fs.channel("conv2", 0), [fs.channel("conv2", 0)],
            [fs.resolve_layer(model, "conv2")], colour_independent())


def plausible(name: str, hint) -> object:
    """A value ``hint`` accepts: what the test suite passes for such an argument."""
    for value in (PLAUSIBLE.get(name), *pool()):
        if accepts(value, hint):
            return value
    raise AssertionError(f"no plausible value for {name}: {hint}")


def annotated() -> list[tuple[str, str, bool]]:
    """``(function, parameter, takes anything)`` for every annotated parameter of every public function."""
    return [(function, parameter, all(accepts(w, hint) for w in WRONG)) for function in public_functions()
            for parameter, hint in resolved_hints(inspect.unwrap(getattr(fs, function))).items()]


def parameter_cases() -> list[tuple[str, str]]:
    """Every annotated parameter of every public function but those annotated to take anything."""
    return [(function, parameter) for function, parameter, anything in annotated() if not anything]


def arguments_for(function, parameter: str, wrong: object) -> tuple[list[object], dict[str, object]]:
    """A call of ``function`` with ``wrong`` for ``parameter`` and a plausible value for every other it needs."""
    hints = resolved_hints(inspect.unwrap(function))
    parameters = list(inspect.signature(function).parameters.values())
    starred = any(p.kind is p.VAR_POSITIONAL for p in parameters)  # register_objective(name, *arguments)
    positional: list[object] = []
    keywords: dict[str, object] = {}
    for p in parameters:
        value = wrong if p.name == parameter else plausible(p.name, hints.get(p.name, object))
        if p.kind is p.VAR_POSITIONAL:
            positional.append(value)
        elif p.kind is p.VAR_KEYWORD:
            keywords.update({"tasks": wrong} if p.name == parameter else {})
        elif starred and p.kind is p.POSITIONAL_OR_KEYWORD:
            positional.append(value)
        elif p.name == parameter or p.default is p.empty:
            keywords[p.name] = value
    return positional, keywords


def test_only_a_few_parameters_take_anything():
    taking_anything = {(function, parameter) for function, parameter, anything in annotated() if anything}
    assert taking_anything == {("wrap_model", "preprocessing")}  # an fs.Preprocessing, torchvision's or timm's


def test_the_walk_covers_every_annotated_parameter():
    cases = parameter_cases()
    assert len(cases) >= 250 and ("rank_filters", "k") in cases and ("trust_units", "options") in cases


@pytest.mark.parametrize(("name", "parameter"), parameter_cases())
def test_a_wrong_typed_argument_is_a_clear_error_naming_it(name, parameter, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    function = getattr(fs, name)
    wrong = next(w for w in WRONG if not accepts(w, resolved_hints(inspect.unwrap(function))[parameter]))
    positional, keywords = arguments_for(function, parameter, wrong)
    shown = "list of object" if isinstance(wrong, list) else type(wrong).__name__
    advice = r"( \(load it first: fs\.load_model\(.*\)\))?"
    with pytest.raises(fs.ArgumentTypeError, match=rf"^fs\.{name}: {parameter} must be .*, not {shown}{advice}$"):
        function(*positional, **keywords)


def test_a_missing_or_unexpected_argument_is_one_as_well():
    with pytest.raises(fs.ArgumentTypeError, match="fs.channel: missing a required argument: 'index'"):
        fs.channel("conv2")
    with pytest.raises(fs.ArgumentTypeError, match="fs.rank_filters: got an unexpected keyword argument 'top'"):
        fs.rank_filters(color_net(), [], "conv1", top=3)


def test_the_error_says_what_the_argument_may_be():
    with pytest.raises(fs.ArgumentTypeError) as caught:
        fs.visualize_filters(color_net(), "conv1", "0,1")
    assert str(caught.value) == "fs.visualize_filters: filters must be a sequence of int, not str"
    with pytest.raises(fs.ArgumentTypeError) as caught:
        fs.rank_filters(color_net(), [Image.new("RGB", (8, 8))], 3)
    assert str(caught.value) == "fs.rank_filters: layer must be str or LayerRef, not int"
    with pytest.raises(fs.ArgumentTypeError, match=r"not str \(load it first: fs.load_model\(.efficientnet_lite0.\)\)"):
        fs.list_layers("efficientnet_lite0")


@pytest.mark.parametrize(("value", "hint", "expected"), [
    (np.int64(3), int, True),               # numpy integers are ints, as the functions treat them
    (torch.tensor(3), int, True),           # so is a one-element integer tensor
    (2.0, int, False), ("3", int, False), (True, int, True),
    (np.float32(0.5), float, True), (3, float, True), (torch.tensor(0.5), float, True), ("0.5", float, False),
    (np.bool_(True), bool, True), ("yes", bool, False),
    ("abc", Sequence[str], False),          # a str is never a sequence of letters
    (["a"], Sequence[str], True), (("a", 1), Sequence[str], False), (range(3), Sequence[int], True),
    (np.arange(3), Sequence[int], True), (torch.arange(3), Sequence[float], True), (np.arange(3), Sequence[str], False),
    ([32, 32], tuple[int, int], True), ((32,), tuple[int, int], False), ((1, 2, 3), tuple[int, ...], True),
    ({"a": [1]}, Mapping[str, Sequence[int]], True), ({"a": ["x"]}, Mapping[str, Sequence[int]], False),
    (Path("x"), str | os.PathLike[str], True), (b"x", str | os.PathLike[str], False),
    ("crop", Literal["crop", "pad"], True), ("fill", Literal["crop", "pad"], False),
    (print, Callable[[int], None], True), (3, Callable[[int], None], False), (None, int | None, True),
])
def test_the_rules_of_the_check(value, hint, expected):
    assert accepts(value, hint) is expected


def test_the_functions_that_take_images_take_one_or_many(tmp_path):
    photo_folder = save_photos(tmp_path / "photos", 3)
    files = sorted(photo_folder.iterdir())
    assert fs.collect_images(photo_folder) == fs.collect_images([photo_folder]) == files
    assert fs.collect_images(str(files[0])) == [files[0]]
    model = color_net()
    one = Image.open(files[0]).convert("RGB")
    assert torch.equal(fs.reference_crops(model, one, crops_per_image=2),
                       fs.reference_crops(model, [one], crops_per_image=2))
    single = fs.circuit(model, "conv2", 0, "conv1", images=files[0], exemplars=1, classes=False, ablate=0)
    listed = fs.circuit(model, "conv2", 0, "conv1", images=[files[0]], exemplars=1, classes=False, ablate=0)
    assert single.exemplars == listed.exemplars == 1
    assert [(c.unit, c.attribution) for c in single.attributed] == [(c.unit, c.attribution) for c in listed.attributed]


def test_names_imported_only_for_type_checking_are_resolved_from_the_module_not_the_package(tmp_path, monkeypatch):
    (tmp_path / "typed_elsewhere.py").write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "from filterscope.arguments import checked\n"
        "if TYPE_CHECKING:\n"
        "    from filterscope.engine.recipes import Recipe as Steps\n"
        "    import numpy.linalg\n"
        "@checked\n"
        "def schedule(recipe: Steps, count: int) -> int:\n"
        "    return count\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    import typed_elsewhere

    from filterscope.arguments import _type_checking_imports

    assert _type_checking_imports("typed_elsewhere") == {"Steps": ("filterscope.engine.recipes", "Recipe"),
                                                         "numpy": ("numpy", None)}
    assert typed_elsewhere.schedule(fs.get_recipe("paper"), 3) == 3
    with pytest.raises(fs.ArgumentTypeError, match=r"fs\.schedule: recipe must be .*Recipe.*, not str"):
        typed_elsewhere.schedule("paper", 3)
