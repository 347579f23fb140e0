"""Any model, any input: grayscale, multispectral, non-square, 0-255, functional activations, tuple and
dict outputs, fixed-size heads; through the Python API and through the CLI with --model FILE.py:FACTORY."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import filterscope as fs
from filterscope.cli import app

from ..helpers import anymodels as am

HELPERS = Path(am.__file__)
QUICK = fs.Recipe(scales=4, steps=12)  # the paper's schedule, shortened; sizes scale with the input
# units that are exactly 0 on the starting noise (common in small trained ReLU networks) need the override
REDIRECTED = QUICK.replace(relu_override_steps=16)
runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def spec(factory: str) -> str:
    return f"{HELPERS}:{factory}"


# ----------------------------------------------------------------------------------- Python API
@pytest.mark.integration
@pytest.mark.numerics
def test_grayscale_digits_model_renders_ranks_and_occludes():
    model = am.digits()
    assert fs.layer_info(model, "relu3").shape == (32, 7, 7)
    result = fs.visualize_filters(model, "relu3", [0, 5, 9], recipe=REDIRECTED)
    assert result.images.shape == (3, 1, 12, 12)  # 1 channel; 4 scales end at 96 px of 224: 12 px of 28
    # unit 0 starts at exactly 0 and rises only through the redirected gradient; unit 9 is dead for any
    # input this network has learned to make (0 from start to end) and is reported so, not drawn silently gray
    assert float(result.initial_values[0]) == 0 and float(result.values[0]) > 5
    assert float(result.values[1]) > 3 * float(result.initial_values[1]) > 0
    assert result.status == ["ok", "ok", "inactive"]
    assert result.pil(0).mode == "L"
    digit = Image.fromarray((am.digit_images()[0][3, 0].numpy() * 255).astype(np.uint8))
    ranking = fs.rank_filters(model, [digit], "relu3", k=5)
    assert ranking.per_image.shape == (1, 32)
    study = fs.occlusion_study(model, digit, "relu3", {"left": [fs.Box(0, 0, 14, 28)]}, k=5)
    assert study.rows[1].occluded_share == pytest.approx(0.5)


def test_the_paper_recipe_scales_with_the_input():
    stages = fs.Stages.from_recipe(fs.PAPER_RECIPE, (28, 28))
    assert stages.schedule.sizes[0] == (7, 7) and stages.schedule.sizes[-1] == (51, 51)
    assert fs.Stages.from_recipe(fs.PAPER_RECIPE, (224, 224)).schedule.sizes == tuple(
        (s, s) for s in fs.PAPER_RECIPE.sizes())  # exactly the paper's numbers at 224 px
    strip = fs.Stages.from_recipe(fs.PAPER_RECIPE, (64, 256)).schedule
    assert strip.sizes[0] == (16, 64) and strip.sizes[-1] == (117, 466)
    lucid = fs.Stages.from_recipe(fs.RECIPES["lucid"], (112, 112))
    assert lucid.transform.pad == 6 and lucid.schedule.sizes == ((112, 112),)


@pytest.mark.integration
def test_multispectral_non_square_model():
    model = am.multispectral()
    result = fs.visualize_filters(model, "features.3", [2, 7], recipe=REDIRECTED)
    assert result.images.shape == (2, 4, 27, 110)  # 96 px of 224, for a 64 x 256 input
    assert (result.values > 3 * result.initial_values.clamp(min=1e-3)).all()
    assert result.pil(0, display=(3, 2, 1)).mode == "RGB"
    arrays = torch.rand(2, 4, 80, 300)
    with pytest.raises(fs.InvalidOptionError, match="4 input channels, which a photo cannot hold"):
        fs.rank_filters(model, [Image.new("RGB", (300, 80))], "features.3")
    maps = fs.sensitivity_maps(model, fs.prepare_image(model, _npy(arrays[0])), "features.3", [1])
    assert maps.maps.shape == (1, 64, 256) and maps.patch == 9  # 1/7 of the 64 px side


def _npy(array: torch.Tensor) -> Path:
    path = Path(pytest.TMP) / f"strip{len(list(Path(pytest.TMP).glob('*.npy')))}.npy"
    np.save(path, array.numpy())
    return path


@pytest.fixture(autouse=True)
def _tmp(tmp_path):
    pytest.TMP = tmp_path  # for _npy


def test_the_optimization_does_not_depend_on_the_input_range():
    recipe = fs.Recipe(scales=3, steps=20, reference_size=32)
    bytes_, units = (fs.visualize_filters(f(), "conv2", [3], recipe=recipe) for f in (am.byte_range, am.unit_range))
    assert float(bytes_.values[0]) > 1.5 * float(bytes_.initial_values[0]) > 0
    assert torch.allclose(bytes_.images, units.images, atol=1e-3)
    assert float(bytes_.values[0]) == pytest.approx(float(units.values[0]), rel=1e-3)


def test_functional_relus_through_module_inputs_and_relu_objectives():
    model = am.functional()
    images = torch.rand(3, 3, 32, 32)
    through_input = fs.measure(model, "channel(conv2@in, 4)", images)
    rectified = fs.measure(model, "relu(channel(conv1, 4))", images)
    assert torch.allclose(through_input, rectified, atol=1e-6)
    assert not torch.allclose(fs.measure(model, "channel(conv1, 4)", images), rectified)  # conv1 is pre-ReLU
    result = fs.render(model, ["channel(conv2@in, 4)", "relu(channel(conv1, 4))"], recipe=QUICK)
    assert (result.values > 3 * result.initial_values.clamp(min=1e-3)).all()


def test_tuple_and_dict_outputs_are_selected_by_element():
    tuples, dicts = am.tuple_head(), am.dict_backbone()
    with pytest.raises(fs.UnknownLayerError, match=r"outputs a tuple of 2: pick one with head\[0\], head\[1\]"):
        fs.resolve_layer(tuples, "head")
    with pytest.raises(fs.UnknownLayerError, match=r"pick one with backbone\[out\], backbone\[aux\]"):
        fs.resolve_layer(dicts, "backbone")
    with pytest.raises(fs.UnknownLayerError, match=r"a dict without 'logit': use one of output\[logits\]"):
        fs.resolve_layer(dicts, "output[logit]")
    with pytest.raises(fs.UnknownLayerError, match=r"pick one with output\[logits\], output\[aux\]"):
        fs.class_logit(1).resolve(dicts)
    assert fs.layer_info(tuples, "head[1]").shape == (6, 32, 32)
    assert fs.layer_info(dicts, "backbone[aux]").shape == (5, 16, 16)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = dicts.module.backbone(dicts.preprocessing.normalize(images))["aux"][:, 1].mean(dim=(1, 2))
    assert torch.allclose(fs.measure(dicts, "channel(backbone[aux], 1)", images), expected, atol=1e-6)
    result = fs.render(tuples, ["channel(head[1], 2)", "channel(output[0], 3)"], recipe=QUICK)
    assert (result.values > result.initial_values).all()
    result = fs.render(dicts, ["channel(backbone[aux], 1)", "channel(output[logits], 2)"], recipe=QUICK)
    assert (result.values > result.initial_values).all()


def test_a_fixed_size_head_renders_at_its_input_size():
    result = fs.render(am.fixed_head(), "class(1)", recipe=QUICK)
    assert result.images.shape[-2:] == (28, 28)
    assert "input size 28 px" in result.extra["schedule"] and "schedule" in result.metadata(0)
    assert result.values[0] > result.initial_values[0]


class _DeadOnNoise(nn.Module):
    """One unit: relu(red - 0.7), exactly 0 on the starting noise (red about 0.5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        self.act = nn.ReLU(inplace=True)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
            self.conv.bias.fill_(-0.7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


def test_a_unit_that_starts_at_exactly_zero_rises_with_the_relu_override():
    model = fs.wrap_model(_DeadOnNoise(), preprocessing=fs.Preprocessing(32, 32, mean=(0.0,) * 3, std=(1.0,) * 3))
    recipe = fs.Recipe(size=32, scales=1, steps=30, reference_size=32)
    plain = fs.render(model, "channel(act, 0)", recipe=recipe)
    assert float(plain.initial_values[0]) == 0 and float(plain.values[0]) == 0
    assert plain.status == ["inactive"] and plain.metadata(0)["status"] == "inactive"
    redirected = fs.render(model, "channel(act, 0)", recipe=recipe.replace(relu_override_steps=10))
    assert float(redirected.initial_values[0]) == 0 and float(redirected.values[0]) > 0.2
    assert redirected.status == ["ok"]
    assert model.module.act.inplace  # put back
    assert redirected.extra["relu_override"] == "the first 10 steps"


def test_the_relu_override_runs_only_for_a_batch_that_needs_it():
    from ..helpers.models import small_net

    model = small_net()
    recipe = fs.RECIPES["lucid"].replace(size=20, steps=6, reference_size=32, relu_override_steps=0)
    plain = fs.visualize_filters(model, "features.5", [1, 2], recipe=recipe, seed=0)
    assert (plain.initial_values != 0).all()
    asked = fs.visualize_filters(model, "features.5", [1, 2], recipe=recipe.replace(relu_override_steps=4), seed=0)
    assert asked.extra["relu_override"] == "not needed: every image started with a gradient"
    assert torch.equal(asked.images, plain.images)  # the ordinary gradient: nothing to redirect


class _NaNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.cat([y[:, :1], torch.log(y[:, 1:] - 100)], dim=1)  # channel 1 is NaN


def test_non_finite_units_are_reported_and_never_saved(tmp_path):
    model = fs.wrap_model(_NaNNet(), preprocessing=fs.Preprocessing(32, 32))
    result = fs.render(model, ["channel(output, 0)", "channel(output, 1)"], recipe=fs.Recipe(scales=2, steps=3))
    assert result.status == ["ok", "non-finite"] and result.failed() == [1]
    paths = fs.save_result(result, tmp_path)
    assert [p.name for p in paths] == [result.file_name(0)] and not (tmp_path / result.file_name(1)).exists()


# ------------------------------------------------------------------------------------------ CLI
TINY = ("--scales", "3", "--steps", "6", "-q")


@pytest.mark.integration
def test_cli_digits_model_from_a_factory_file(tmp_path):
    out = tmp_path / "out"
    result = run("visualize", "-m", spec("digits"), "-l", "relu3", "-f", "0-2", "-o", out, *TINY)
    assert result.exit_code == 0, result.output
    pngs = sorted(out.glob("digits-relu3-f*.png"))
    assert len(pngs) == 3
    with Image.open(pngs[0]) as image:
        assert image.mode == "L"
    meta = fs.read_png_metadata(pngs[0])
    assert meta["model_source"] == spec("digits") and json.loads(meta["preprocessing"])["mean"] == [0.2]
    # evaluate reads the model back from the metadata (reference: digits, the model's own data)
    digits_dir = tmp_path / "digits"
    digits_dir.mkdir()
    images = am.digit_images()[0]
    for i in range(4):
        Image.fromarray((images[i, 0].numpy() * 255).astype(np.uint8)).save(digits_dir / f"{i}.png")
    scored = run("evaluate", *pngs, "--reference", digits_dir, "--samples", "2", "--json", tmp_path / "s.json")
    assert scored.exit_code == 0, scored.output
    rows = json.loads((tmp_path / "s.json").read_text())
    assert len(rows) == 3 and all(row["model"] == spec("digits") for row in rows)
    top = run("top", *sorted(digits_dir.glob("*.png")), "-m", spec("digits"), "-l", "relu3", "-k", "3", "-o", out)
    assert top.exit_code == 0, top.output
    occlude = run("occlude", digits_dir / "0.png", "-m", spec("digits"), "-l", "relu3", "-k", "3",
                  "-r", "top=0,0,8,4", "--maps", "-o", out)
    assert occlude.exit_code == 0, occlude.output
    assert "top  " in occlude.output and (out / "0-relu3-sensitivity.png").is_file()


def test_cli_multispectral_model_with_arrays_and_a_display_mapping(tmp_path):
    out = tmp_path / "out"
    result = run("visualize", "-m", spec("multispectral"), "-l", "features.3", "-f", "1", "--display", "3,2,1",
                 "-o", out, *TINY)
    assert result.exit_code == 0, result.output
    array = np.load(out / "strip-features.3-f0001.npy")
    assert array.shape[0] == 4 and array.shape[1] < array.shape[2]  # 4 channels, wider than high
    meta = fs.read_png_metadata(out / "strip-features.3-f0001.png")
    assert meta["display"] == "3,2,1" and meta["array"] == "strip-features.3-f0001.npy"
    reference = torch.rand(6, 4, 64, 256)
    scored = fs.score(am.multispectral(), "channel(features.3, 1)", torch.from_numpy(array)[None],
                      reference=reference, samples=2)[0]
    assert scored.activation_ratio > 0
    evaluated = run("evaluate", out / "strip-features.3-f0001.png", "--samples", "2")
    assert evaluated.exit_code == 1 and "no reference photos for it" in evaluated.output
    bad = run("visualize", "-m", spec("multispectral"), "-l", "features.3", "-f", "1", "--display", "4,2,1",
              "-o", out, *TINY)
    assert bad.exit_code == 1 and "--display takes 1 to 3 channels of the model's 4 (0-3)" in bad.output
    data = tmp_path / "tiles"
    data.mkdir()
    for i in range(3):
        np.save(data / f"tile{i}.npy", (np.random.default_rng(i).random((90, 320, 4)) * 255).astype(np.uint8))
    top = run("top", data, "-m", spec("multispectral"), "-l", "features.3", "-k", "4", "-o", out)
    assert top.exit_code == 0, top.output
    occlude = run("occlude", data / "tile0.npy", "-m", spec("multispectral"), "-l", "features.3", "-k", "4",
                  "-r", "left=0%,0%,50%,100%", "-o", out)
    assert occlude.exit_code == 0, occlude.output
    assert "| left |" in (out / "tile0-features.3-occlusion.md").read_text()


@pytest.mark.parametrize(("factory", "layer"), [("byte_range", "conv2"), ("functional", "conv2@in"),
                                                 ("tuple_head", "head[1]"), ("dict_backbone", "backbone[aux]")])
def test_cli_layer_specs_for_every_kind_of_model(tmp_path, factory, layer):
    result = run("visualize", "-m", spec(factory), "-l", layer, "-f", "1", "-o", tmp_path, *TINY)
    assert result.exit_code == 0, result.output
    (png,) = tmp_path.glob("*-f0001.png")
    meta = fs.read_png_metadata(png)
    assert float(meta["final_activation"]) > float(meta["initial_activation"])


def test_cli_preprocessing_file_and_clear_errors_for_models(tmp_path):
    prep = tmp_path / "prep.toml"
    prep.write_text('input_size = [64, 256]\nmean = [0.3, 0.3, 0.3, 0.4]\nstd = [0.2, 0.2, 0.2, 0.25]\n')
    listed = run("layers", spec("multispectral"), "--preprocessing", prep)
    assert listed.exit_code == 0 and "64x256 px input (4 channel(s))" in listed.output
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"input_size": 28, "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}))
    failed = run("layers", spec("digits"), "--preprocessing", wrong)
    assert failed.exit_code == 1 and "fails on a 3-channel 28x28 input" in failed.output
    assert "Traceback" not in failed.output
    missing = run("layers", f"{HELPERS}:nothing_here")
    assert missing.exit_code == 1 and "has no callable 'nothing_here'" in missing.output
    script = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated: users still have them
        torch.jit.save(torch.jit.script(nn.Conv2d(3, 4, 3)), script)
    refused = run("layers", script)
    assert refused.exit_code == 1 and "TorchScript module: its layers cannot be hooked" in refused.output


def test_exported_programs_keep_their_layers(tmp_path):
    net = am.functional().module
    path = tmp_path / "functional.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's own internals
        batch = torch.export.Dim("batch", min=1, max=64)  # a dynamic batch: filterscope batches images
        torch.export.save(torch.export.export(net, (torch.rand(2, 3, 32, 32),), dynamic_shapes=({0: batch},)),
                          str(path))
    model = fs.load_model(str(path), preprocessing=fs.Preprocessing(32, 32, mean=(0.5,) * 3, std=(0.25,) * 3))
    images = torch.rand(2, 3, 32, 32)
    original = fs.measure(am.functional(), "channel(conv1, 2)", images)
    assert torch.allclose(fs.measure(model, "channel(conv1, 2)", images), original, atol=1e-5)


def test_plugins_register_models_through_entry_points(monkeypatch):
    from importlib.metadata import EntryPoint

    from filterscope.zoo import sources

    plugin = EntryPoint(name="tiny_plugin", value="tests.helpers.anymodels:unit_range", group=sources.ENTRY_POINT_GROUP)
    monkeypatch.setattr(sources, "entry_point_models", lambda: {"tiny_plugin": plugin})
    model = fs.load_model("tiny_plugin")
    assert model.name == "units" and model.info["source"] == "tiny_plugin"


def test_nan_filters_are_ranked_last_and_named():
    model = fs.wrap_model(_NaNNet(), preprocessing=fs.Preprocessing(32, 32))
    ranking = fs.rank_filters(model, [Image.new("RGB", (40, 40), "red")], "output", k=1)
    assert ranking.top == [0] and ranking.order == [0, 1] and ranking.nonfinite == [1]
    assert 0 <= ranking.concentration.top_k_share <= 1


@pytest.mark.parametrize(("factory", "layer"), [("byte_range", "conv2"), ("functional", "conv2@in"),
                                                 ("tuple_head", "head[1]"), ("dict_backbone", "backbone[aux]")])
@pytest.mark.integration
def test_cli_ranks_and_occludes_with_every_kind_of_model(tmp_path, factory, layer):
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)).save(photo)
    top = run("top", photo, "-m", spec(factory), "-l", layer, "-k", "3", "--json", tmp_path / "t.json", "-o", tmp_path)
    assert top.exit_code == 0, top.output
    assert len(json.loads((tmp_path / "t.json").read_text())["top"]) == 3
    occlude = run("occlude", photo, "-m", spec(factory), "-l", layer, "-k", "3", "-r", "corner=0,0,20,20",
                  "-o", tmp_path)
    assert occlude.exit_code == 0, occlude.output
    assert "corner" in occlude.output
