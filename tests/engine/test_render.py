import pytest
import torch

from filterscope import Recipe, channel, class_logit, iter_render, neuron, render, save_result, visualize_filters

from ..helpers.models import color_net, small_net
from ..helpers.recipes import SMALL


def test_target_channel_activation_rises_by_a_large_factor():
    result = visualize_filters(small_net(), "features.5", [3, 7], recipe=SMALL, seed=0)
    assert (result.initial_values > 0).all()
    assert (result.values >= 10 * result.initial_values).all(), (result.initial_values, result.values)
    # and it is the optimization that did it: the history climbs within the first scale
    assert (result.history[:, SMALL.steps - 1] > result.history[:, 0]).all()


def test_red_detector_is_maximized_by_a_red_image():
    result = visualize_filters(color_net(), "conv1", [0], recipe=SMALL, seed=0)
    image = result.images[0]
    assert image[0].mean() > 0.99  # red saturates at the clip
    assert float(result.values[0]) == pytest.approx(float(image[0].mean()), abs=1e-5)


def test_output_images_shape_range_and_history():
    calls = []
    result = visualize_filters(small_net(), "features.3", [0, 1, 2], recipe=SMALL, seed=3, batch_size=3,
                               callback=calls.append)
    side = SMALL.output_size
    assert result.images.shape == (3, 3, side, side)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert result.history.shape == (3, SMALL.total_steps)
    assert len(calls) == SMALL.total_steps
    assert [c.width for c in calls[::SMALL.steps]][:2] == SMALL.sizes()[:2]


@pytest.mark.integration
@pytest.mark.parametrize("batch_size", [1, 2])
def test_batch_equals_one_by_one(batch_size):
    model = small_net()
    filters = [1, 4, 9, 12]
    together = visualize_filters(model, "features.4", filters, recipe=SMALL, seed=5, batch_size=batch_size)
    for i, f in enumerate(filters):
        alone = visualize_filters(model, "features.4", [f], recipe=SMALL, seed=5)
        assert torch.allclose(together.images[i], alone.images[0], atol=1e-4)
        assert float(together.values[i]) == pytest.approx(float(alone.values[0]), rel=1e-4)


def test_mixed_objectives_in_one_batch_match_separate_runs():
    model = small_net()
    objectives = [channel("features.5", 2), neuron("features.5", 3), class_logit(1)]
    together = render(model, objectives, recipe=SMALL, seed=1)
    for i, objective in enumerate(objectives):
        alone = render(model, objective, recipe=SMALL, seed=1)
        assert torch.allclose(together.images[i], alone.images[0], atol=1e-4)
    assert (together.values > together.initial_values).all()


def test_iter_render_yields_finished_batches():
    parts = list(iter_render(small_net(), [channel("features.3", i) for i in range(5)], recipe=SMALL, batch_size=2))
    assert [len(p) for p in parts] == [2, 2, 1]


def test_same_seed_gives_the_same_png_bytes(tmp_path):
    model = small_net()

    def png(seed, folder):
        result = visualize_filters(model, "features.5", [6], recipe=SMALL, seed=seed)
        return save_result(result, tmp_path / folder)[0].read_bytes()

    assert png(11, "a") == png(11, "b")
    assert png(11, "c") != png(12, "d")


def test_render_leaves_the_model_and_the_callers_rng_alone():
    model = small_net()
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    rng = torch.random.get_rng_state()
    visualize_filters(model, "features.3", [0], recipe=SMALL)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())
    # the module is the caller's: as it was given (a fresh nn.Module: training mode, trainable weights)
    assert all(p.requires_grad for p in model.module.parameters())
    assert model.module.training


def test_metadata_names_everything():
    result = visualize_filters(small_net(), "features.5", [6], recipe=SMALL, seed=4)
    meta = result.metadata(0)
    assert "(bf16: " in meta["cpu"]  # the CPU and its bfloat16 support (which decide what bf16 costs)
    assert meta["model"] == "smallnet" and meta["layer"] == "features.5" and meta["filter"] == "6"
    assert meta["seed"] == "4" and '"steps": 10' in meta["recipe"]
    assert float(meta["final_activation"]) == pytest.approx(float(result.values[0]), rel=1e-5)
    assert meta["filterscope_version"]
    # the settings that fix float rounding, so the run can be repeated byte for byte
    assert (meta["device"], meta["precision"], meta["memory_format"], meta["batch_size"]) == (
        "cpu", "fp32", "channels_last", "1")
    assert int(meta["threads"]) == torch.get_num_threads()


def test_copies_start_from_different_noise_and_diversity_pushes_them_apart():
    from filterscope.engine.objectives import diversity

    model = small_net()
    plain = render(model, channel("features.5", 3), recipe=SMALL, copies=3, seed=0)
    assert len(plain) == 3 and not torch.equal(plain.images[0], plain.images[1])
    diverse = render(model, channel("features.5", 3) + 5.0 * diversity("features.5"), recipe=SMALL, copies=3, seed=0)

    def gram_similarity(images):
        from filterscope.layers import Capture, resolve_layer

        ref = resolve_layer(model, "features.5")
        with torch.no_grad(), Capture(model, [ref]) as capture:
            act = capture(model.preprocessing.normalize(images))[ref]
        return -float(diversity(ref)({ref: act}).mean())

    # Gram matrices of ReLU features are all alike (cosine ~0.9997 here); diversity multiplies the gap.
    assert 1 - gram_similarity(diverse.images) > 3 * (1 - gram_similarity(plain.images))
    with pytest.raises(Exception, match="batchwise"):
        render(model, diversity("features.5"), recipe=SMALL, copies=3, batch_size=1)


def test_a_progress_bar_counts_every_step_of_every_batch_and_the_analyses_items(capsys):
    import filterscope as fs

    recipe = Recipe(scales=2, steps=3, size=16, late_steps_factor=1.0)
    with fs.ProgressBar("render") as bar:
        render(small_net(), [channel("features.5", c) for c in range(3)], recipe=recipe, batch_size=2,
               callback=bar)
    assert bar.bar.n == bar.bar.total == 2 * 3 * 2  # 2 scales x 3 steps, in 2 batches
    with fs.ProgressBar("images") as images:
        for done in range(1, 6):
            images(done, 5)
    assert images.bar.n == images.bar.total == 5
    assert "render" in capsys.readouterr().err  # tqdm.auto outside a notebook: text on stderr
