import pytest
import torch

from filterscope import ChannelError, InvalidObjectiveError, LayerRef, channel, class_logit, neuron

from ..helpers.models import color_net

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


def test_layer_energy_and_direction_on_hand_built_activations():
    from filterscope.engine.objectives import direction, layer_energy

    acts = _acts()
    # sample 0: channel 1 is 2 everywhere → mean of squares over (3, 4, 4) = 4 * 16 / 48
    assert torch.allclose(layer_energy(A)(acts), torch.tensor([4 * 16 / 48, (256 + 25) / 48]))
    # direction (0, 3, 4)/5: sample 0 → 0.6 * 2; sample 1 → (0.6 * 16 + 0.8 * 5) / 16
    assert torch.allclose(direction(A, [0, 3, 4])(acts), torch.tensor([1.2, (0.6 * 16 + 0.8 * 5) / 16]))


def test_diversity_is_minus_the_mean_gram_similarity():
    from filterscope.engine.objectives import diversity

    same = torch.ones(3, 2, 2, 2)
    assert torch.allclose(diversity(A)({A: same}), torch.full((3,), -1.0))
    orthogonal = torch.zeros(2, 2, 1, 1)
    orthogonal[0, 0] = 1.0
    orthogonal[1, 1] = 1.0
    assert torch.allclose(diversity(A)({A: orthogonal}), torch.zeros(2))
    assert diversity(A)({A: same[:1]}).tolist() == [0.0]


def test_resolve_checks_direction_length():
    from filterscope.engine.objectives import direction

    with pytest.raises(InvalidObjectiveError, match="6 values"):
        direction("conv2", [1, 2]).resolve(color_net())


@pytest.mark.parametrize("text", [
    "channel(layer4.2.relu, 484) - 0.5*channel(layer4.2.relu, 257)",
    "neuron(_blocks.15, 3)", "neuron(act:0, 1, 2, 3)", "class(281)", "layer(_blocks.8)",
    "direction(conv2, [1, -2.5, 0.3])", "channel(a, 1) + 0.1*diversity(a)", "2*(channel(a, 1) + layer(b))",
    "-1*channel(x:0, 3)",
])
def test_descriptions_parse_back_to_the_same_objective(text):
    from filterscope import parse_objective

    objective = parse_objective(text)
    assert objective.description == text
    assert parse_objective(objective.description) == objective


@pytest.mark.parametrize("text, position, what", [
    ("channel(a,1) - )", 16, "expected a number, a function or '('"),
    ("channel(a)", 10, "expected ','"),
    ("channel(a, x)", 12, "expected an integer"),
    ("channel(a,1) channel(b,2)", 14, "expected '+', '-', '*' or the end"),
    ("chanel(a,1)", 1, "unknown function 'chanel'"),
    ("direction(a, [1, 2)", 19, "expected ']'"),
])
def test_parser_errors_point_at_the_position(text, position, what):
    from filterscope import parse_objective

    with pytest.raises(InvalidObjectiveError) as err:
        parse_objective(text)
    message = str(err.value)
    assert what in message and f"position {position}" in message and "\n" not in message
