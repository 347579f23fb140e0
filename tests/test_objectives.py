import pytest
import torch

from filterscope import ChannelError, InvalidObjectiveError, LayerRef, channel, class_logit, neuron

from .helpers.models import color_net

A, OUT = LayerRef("a"), LayerRef("")


def _acts():
    act = torch.zeros(2, 3, 4, 4)
    act[0, 1] = 2.0
    act[1, 1, 0, 0] = 16.0  # mean 1 over the 4x4 map
    act[1, 2, 2, 2] = 5.0  # the center of a 4x4 map is (2, 2)
    logits = torch.tensor([[0.5, -1.0], [3.0, 4.0]])
    return {A: act, OUT: logits}


def test_channel_is_the_spatial_mean():
    assert torch.equal(channel(A, 1)(_acts()), torch.tensor([2.0, 1.0]))


def test_neuron_defaults_to_the_center_and_checks_bounds():
    assert torch.equal(neuron(A, 2)(_acts()), torch.tensor([0.0, 5.0]))
    assert torch.equal(neuron(A, 1, y=0, x=0)(_acts()), torch.tensor([2.0, 16.0]))
    with pytest.raises(InvalidObjectiveError, match="outside the 4x4 map"):
        neuron(A, 1, y=4, x=0)(_acts())


def test_class_logit_reads_the_output():
    assert torch.equal(class_logit(1)(_acts()), torch.tensor([-1.0, 4.0]))


def test_arithmetic_and_descriptions():
    acts = _acts()
    combo = channel(A, 1) - 0.5 * channel(A, 2)
    assert torch.allclose(combo(acts), torch.tensor([2.0, 1.0 - 0.5 * 5 / 16]))
    assert combo.description == "channel(a, 1) - 0.5*channel(a, 2)"
    assert torch.allclose((channel(A, 1) * class_logit(0))(acts), torch.tensor([1.0, 3.0]))
    assert torch.allclose((-channel(A, 1) + 1)(acts), torch.tensor([-1.0, 0.0]))
    assert (2 * (channel(A, 1) + channel(A, 2))).description == "2*(channel(a, 1) + channel(a, 2))"
    assert set(combo.layers) == {A}


def test_resolve_checks_layers_and_indices():
    model = color_net()
    assert channel("conv2", 5).resolve(model).layer == LayerRef("conv2")
    assert class_logit(4).resolve(model).index == 4
    with pytest.raises(ChannelError, match="0-5"):
        channel("conv2", 6).resolve(model)
    with pytest.raises(ChannelError, match="5 classes"):
        class_logit(5).resolve(model)
    with pytest.raises(ChannelError):
        (channel("conv2", 1) + channel("conv1", 9)).resolve(model)
