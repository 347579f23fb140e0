import pytest
import torch

import filterscope as fs
from filterscope import Capture, ChannelError, LayerRef, UnknownLayerError, layer_info, list_layers, resolve_layer
from filterscope.layers import check_channel

from .helpers.models import color_net


def test_list_layers_gives_shapes_and_call_counts():
    model = color_net()
    infos = {info.name: info for info in list_layers(model)}
    assert infos["conv1"].shape == (4, 32, 32)
    assert infos["conv2"].shape == (6, 32, 32)
    assert infos["act"].calls == 2 and infos["act"].shape == (6, 32, 32)  # last call's shape
    assert infos["act"].call_shapes == ((4, 32, 32), (6, 32, 32))
    assert layer_info(model, "act:0").channels == 4 and layer_info(model, "act").channels == 6
    assert infos[""].shape == (5,)
    assert list_layers(model, 16)[1].shape == (4, 16, 16)


def test_resnet_layers_and_child_index_paths(resnet18_random):
    model = resnet18_random
    assert resolve_layer(model, "layer4.1.relu") == LayerRef("layer4.1.relu")
    # The paper's "relu of the 2nd basic block of the 7th layer": children 0..9 are conv1, bn1, relu,
    # maxpool, layer1, layer2, layer3, layer4, avgpool, fc.
    assert resolve_layer(model, "7.1.relu") == LayerRef("layer4.1.relu")
    assert resolve_layer(model, "5.1.conv1") == LayerRef("layer2.1.conv1")
    assert resolve_layer(model, "7.1.4") == LayerRef("layer4.1.bn2")
    assert layer_info(model, "7.1.relu").shape == (512, 7, 7)
    assert layer_info(model, "layer4.1.relu").calls == 2


def test_call_selectors_normalize_to_the_last_call():
    model = color_net()
    assert resolve_layer(model, "act") == LayerRef("act", -1)
    assert resolve_layer(model, "act:1") == LayerRef("act", -1)
    assert resolve_layer(model, "act:-1") == LayerRef("act", -1)
    assert resolve_layer(model, "act:0") == LayerRef("act", 0)
    assert resolve_layer(model, "act:-2") == LayerRef("act", 0)
    assert resolve_layer(model, "output") == LayerRef("")


def test_repeated_module_is_captured_at_its_last_call_by_default():
    model = color_net()
    net = model.module
    x = torch.rand(2, 3, 32, 32)
    with Capture(model, [resolve_layer(model, "act"), resolve_layer(model, "act:0")]) as capture:
        acts = capture(x)
    first = torch.relu(net.conv1(x))
    assert torch.allclose(acts[LayerRef("act", 0)], first)
    assert torch.allclose(acts[LayerRef("act")], torch.relu(net.conv2(first)))


def test_resnet_repeated_relu_first_and_last_call(resnet18_random):
    model = resnet18_random
    block = model.module.layer1[0]
    x = torch.rand(1, 3, 64, 64)
    with Capture(model, [LayerRef("maxpool"), LayerRef("layer1.0.relu", 0), LayerRef("layer1.0.relu")]) as cap:
        acts = cap(model.preprocessing.normalize(x))
    inp = acts[LayerRef("maxpool")]
    with torch.no_grad():
        first = torch.relu(block.bn1(block.conv1(inp)))
        last = torch.relu(block.bn2(block.conv2(first)) + inp)
    assert torch.allclose(acts[LayerRef("layer1.0.relu", 0)], first, atol=1e-5)
    assert torch.allclose(acts[LayerRef("layer1.0.relu")], last, atol=1e-5)


def test_forward_stops_at_the_target_layer():
    model = color_net()
    list_layers(model)  # the probe pass that finds shapes runs the whole network once
    tripwire = model.module.after
    tripwire.calls = 0
    with Capture(model, [resolve_layer(model, "conv2")]) as capture:
        capture(torch.rand(1, 3, 32, 32))
        assert tripwire.calls == 0
    with Capture(model, [resolve_layer(model, "act")]) as capture:
        capture(torch.rand(1, 3, 32, 32))
        assert tripwire.calls == 0  # stops right after the second call of act
    with Capture(model, [resolve_layer(model, "output")]) as capture:
        capture(torch.rand(1, 3, 32, 32))
    assert tripwire.calls == 1


def test_truncation_skips_the_rest_of_a_resnet(resnet18_random):
    model = resnet18_random
    ran = []
    handles = [model.module.get_submodule(n).register_forward_hook(lambda *a, n=n: ran.append(n))
               for n in ("layer2.0.conv1", "layer2.1.conv1", "layer3", "fc")]
    try:
        with Capture(model, [resolve_layer(model, "layer2.0.conv1")]) as capture:
            capture(torch.rand(1, 3, 64, 64))
    finally:
        for h in handles:
            h.remove()
    assert ran == ["layer2.0.conv1"]


def test_hooks_are_removed_after_capture():
    model = color_net()
    with Capture(model, [resolve_layer(model, "conv2")]):
        assert model.module.conv2._forward_hooks
    assert not model.module.conv2._forward_hooks


def test_unknown_layer_names_the_nearest_layers(resnet18_random):
    with pytest.raises(UnknownLayerError) as err:
        resolve_layer(resnet18_random, "layer4.1.conv")
    message = str(err.value)
    assert "'layer4.1.conv'" in message and "'layer4.1.conv1'" in message
    assert "filterscope layers resnet18" in message


def test_bad_child_index_and_bad_call_are_errors(resnet18_random):
    with pytest.raises(UnknownLayerError, match="'12.1.relu'"):
        resolve_layer(resnet18_random, "12.1.relu")
    with pytest.raises(UnknownLayerError, match="runs 2 time"):
        resolve_layer(resnet18_random, "layer4.1.relu:2")
    with pytest.raises(UnknownLayerError, match="call selector"):
        resolve_layer(resnet18_random, "layer4.1.relu:last")


def test_channel_out_of_range_gives_the_range():
    model = color_net()
    check_channel(model, LayerRef("conv2"), 5)
    with pytest.raises(ChannelError, match=r"6 channels \(0-5\)"):
        check_channel(model, LayerRef("conv2"), 6)
    with pytest.raises(ChannelError):
        check_channel(model, LayerRef("conv2"), -1)


def test_torchvision_feature_extraction_names_are_accepted_or_explained():
    model = fs.load_model("resnet18", weights="random", calibrate=False)
    # get_graph_node_names calls the two runs of a BasicBlock's relu layer1.0.relu and layer1.0.relu_1
    assert fs.resolve_layer(model, "layer1.0.relu_1") == fs.resolve_layer(model, "layer1.0.relu:1")
    assert fs.resolve_layer(model, "layer1.0.relu_0") == fs.resolve_layer(model, "layer1.0.relu:0")
    with pytest.raises(fs.UnknownLayerError, match="functional node of torchvision.* use that module's name with @in"):
        fs.resolve_layer(model, "layer1.0.add")
    with pytest.raises(fs.UnknownLayerError, match="Unknown layer 'layer1.0.conv3'"):
        fs.resolve_layer(model, "layer1.0.conv3")
