"""The Python API is an input surface too: a wrong-typed model (or a single image where a sequence is
expected) gets a clear FilterscopeError naming the argument, not an AttributeError from deep inside."""

from __future__ import annotations

import inspect

import pytest
from PIL import Image

import filterscope as fs

from .helpers.models import color_net

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
    arguments = []
    for parameter in list(inspect.signature(function).parameters.values())[1:]:
        if parameter.default is parameter.empty and parameter.kind is parameter.POSITIONAL_OR_KEYWORD:
            arguments.append(PLAUSIBLE[parameter.name])
    keywords = {p.name: PLAUSIBLE[p.name] for p in inspect.signature(function).parameters.values()
                if p.kind is p.KEYWORD_ONLY and p.default is p.empty}
    with pytest.raises(fs.ArgumentTypeError, match=f"model must be .*, not {type(wrong).__name__}"):
        result = function(wrong, *arguments, **keywords)
        if inspect.isgenerator(result):  # iter_render: its checks run when it is first iterated
            next(result)


def test_an_argument_type_error_is_also_a_type_error():
    with pytest.raises(TypeError, match="wrap_model needs a torch.nn.Module as module, not int"):
        fs.wrap_model(3)


def test_rank_filters_takes_one_image_as_well_as_many():
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    one = fs.rank_filters(color_net(), image, "conv1", k=2)
    many = fs.rank_filters(color_net(), [image], "conv1", k=2)
    assert one.top == many.top and one.means.tolist() == many.means.tolist() and len(one.images) == 1
