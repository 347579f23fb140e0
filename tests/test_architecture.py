"""The package's structure: imports flow one way, the public API is one import, a lent module comes back
as it was given, the extension points accept new entries, errors on user input are FilterscopeErrors."""

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import filterscope as fs

from .helpers.models import PLAIN, SmallConvNet

PACKAGE = Path(fs.__file__).parent


def _module_name(path: Path) -> str:
    parts = ["filterscope", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """filterscope module → the filterscope modules it imports, function-local imports included."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # `from pkg import sub` imports the submodule when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            graph[name].update(t for t in targets if t in files and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_filterscope_modules():
    graph = _import_graph()
    # function-local imports count: the command imports matplotlib's module only when it draws
    assert len(graph) > 30 and {"filterscope.engine.render", "filterscope.plots"} <= graph["filterscope.cli.visualize"]
    assert _cycles(graph) == []


def test_only_the_cli_imports_typer_and_only_the_top_imports_the_package():
    graph = _import_graph()
    for name, path in ((_module_name(p), p) for p in PACKAGE.rglob("*.py")):
        if not name.startswith("filterscope.cli"):
            assert "typer" not in path.read_text(), name
        if name != "filterscope":
            assert "filterscope" not in graph[name], f"{name} imports the package's __init__"


def test_public_api_has_everything_the_readme_uses():
    for name in fs.__all__:
        assert hasattr(fs, name), name
    # the lazy map, __all__ and the TYPE_CHECKING imports list the same names: the first two must agree
    assert set(fs._EXPORTS) == set(fs.__all__) - {"__version__"}
    for name in ("save_result", "get_recipe", "score", "rank_filters", "occlusion_study", "sensitivity_maps", "Box",
                 "parse_objective", "Runtime", "register_param", "register_transform", "register_objective",
                 "register_model"):
        assert name in fs.__all__, name


# ------------------------------------------------------------------------------ the caller's module
class _TrainableNet(nn.Module):
    """A network with batch norm and dropout: both behave differently in training mode."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.drop(torch.relu(self.bn(self.conv(x)))))
        return self.fc(x.mean(dim=(2, 3)))


def test_a_bare_module_in_training_mode_comes_back_unchanged(tmp_path):
    net = _TrainableNet()
    net.train()
    net.fc.weight.requires_grad_(False)  # a mix of frozen and trainable parameters, kept as it is
    net.head.eval()                      # and a submodule in eval mode inside a training model
    modes = {name: m.training for name, m in net.named_modules()}
    grads = {name: p.requires_grad for name, p in net.named_parameters()}
    state = {k: v.clone() for k, v in net.state_dict().items()}

    model = fs.wrap_model(net, name="mine", preprocessing=PLAIN)
    recipe = fs.Recipe(size=16, scales=2, steps=3)
    fs.list_layers(model)
    result = fs.render(net, "channel(head.1, 2)", recipe=recipe)  # a bare module, and a string objective
    assert result.values[0] > result.initial_values[0]
    fs.render(model, [fs.channel("head.1", 1), "class(2)"], recipe=recipe)
    image = torch.rand(3, 32, 32)
    from PIL import Image

    photo = Image.fromarray((image.permute(1, 2, 0) * 255).byte().numpy())
    fs.rank_filters(model, [photo], "head.1", k=3)
    fs.occlusion_study(model, photo, "head.1", {"corner": [fs.Box(0, 0, 10, 10)]}, k=3)
    fs.sensitivity_maps(model, photo, "head.1", [0], patch=8, stride=8)
    fs.score(model, "channel(head.1, 2)", result.images, reference=image[None], samples=2)
    model(image[None])

    assert {name: m.training for name, m in net.named_modules()} == modes
    assert {name: p.requires_grad for name, p in net.named_parameters()} == grads
    # batch-norm running statistics were not updated by any of it
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_analyses_of_a_training_mode_module_equal_eval_mode():
    net = _TrainableNet()
    images = torch.rand(2, 3, 32, 32)
    model = fs.wrap_model(net, preprocessing=PLAIN)
    net.train()
    in_training = fs.measure(model, "channel(head.1, 4)", images)
    net.eval()
    assert torch.equal(fs.measure(model, "channel(head.1, 4)", images), in_training)


# ------------------------------------------------------------------------------- extension points
def test_a_registered_parameterization_is_named_by_a_recipe(tmp_path):
    @fs.register_param("test_gray")
    class GrayParam(fs.Param):
        """One value per pixel, repeated in the three channels."""

        def __init__(self, state, preprocessing=None):
            super().__init__()
            self.x = nn.Parameter(state.mean(dim=1, keepdim=True).clone())

        def state(self):
            return self.forward().detach()

        def set_state(self, state):
            with torch.no_grad():
                self.x.copy_(state.mean(dim=1, keepdim=True))

        def forward(self):
            return self.x.expand(-1, 3, -1, -1)

    try:
        path = tmp_path / "gray.json"
        path.write_text('{"param": "test_gray", "size": 16, "scales": 2, "steps": 4}')
        recipe = fs.get_recipe(path)
        result = fs.render(fs.wrap_model(SmallConvNet(), preprocessing=PLAIN), "channel(features.3, 5)", recipe=recipe)
        image = result.images[0]
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # gray, as the param makes it
        assert result.values[0] > result.initial_values[0]
        assert fs.Recipe.from_dict(recipe.to_dict()) == recipe
    finally:
        fs.PARAMS._entries.pop("test_gray")
    with pytest.raises(fs.InvalidRecipeError, match="param must be one of cppn, fft, maco, pixel"):
        fs.get_recipe(path)


def test_a_registered_transform_is_named_by_a_recipe():
    @fs.register_transform("test_flip")
    class Flip(fs.Transform):
        def __init__(self, axis: int = -1) -> None:
            self.axis = axis

        def to_dict(self):
            return {"kind": self.kind, "axis": self.axis}

        def __call__(self, images, generators):
            return images.flip(self.axis)

    try:
        recipe = fs.Recipe.from_dict({**fs.Recipe(size=16, scales=1, steps=2).to_dict(),
                                      "transforms": {"kind": "test_flip", "axis": -2}})
        assert isinstance(recipe.transforms, Flip) and recipe.transforms.axis == -2
        assert recipe.to_dict()["transforms"] == {"kind": "test_flip", "axis": -2}
        assert fs.render(SmallConvNet(), "channel(features.1, 0)", recipe=recipe).images.shape[0] == 1
        with pytest.raises(fs.InvalidRecipeError, match="Invalid options for transform 'test_flip'"):
            fs.Recipe(transforms={"kind": "test_flip", "angle": 3})
    finally:
        fs.TRANSFORMS._entries.pop("test_flip")
    assert fs.Recipe(transforms="lucid").transforms == fs.RECIPES["lucid"].transforms
    with pytest.raises(fs.InvalidRecipeError, match="Unknown transform 'lucd'. Did you mean 'lucid'"):
        fs.Recipe(transforms="lucd")


def test_a_registered_objective_function_parses_from_strings():
    @fs.register_objective("test_both", "layer", "int", "int")
    def both(layer, a, b):
        return fs.channel(layer, a) + fs.channel(layer, b)

    try:
        objective = fs.parse_objective("test_both(features.3, 1, 2) - 1")
        assert objective.description == "channel(features.3, 1) + channel(features.3, 2) - 1"
        with pytest.raises(ValueError, match="already registered"):
            fs.register_objective("test_both", "layer")(both)
    finally:
        fs.OBJECTIVES._entries.pop("test_both")
    with pytest.raises(fs.InvalidObjectiveError, match="unknown function 'test_both'"):
        fs.parse_objective("test_both(features.3, 1, 2)")


def test_objectives_carry_what_other_modules_needed_isinstance_for():
    assert fs.channel("layer4.2.relu", 7).file_stem() == "layer4.2.relu-f0007"
    assert fs.neuron("a:0", 3, 1, 2).file_stem() == "a@0-n0003-y1x2"
    assert fs.class_logit(5).file_stem() == "class0005"
    assert fs.layer_energy("x").file_stem() == "layer_x"
    assert fs.channel("l", 3).metadata() == {"layer": "l", "filter": "3"}
    assert fs.class_logit(1).title == "class 1" and fs.channel("l", 3).title == "filter 3"
    assert (fs.channel("l", 1) + 0.5 * fs.diversity("l")).batchwise and not fs.channel("l", 1).batchwise


def test_strings_are_objectives_everywhere_and_never_character_sequences():
    net = SmallConvNet()
    recipe = fs.Recipe(size=16, scales=1, steps=2)
    result = fs.render(net, "channel(features.3, 1)", recipe=recipe)
    assert len(result) == 1 and result.objectives[0] == fs.channel("features.3", 1).resolve(
        fs.wrap_model(net, preprocessing=fs.Preprocessing(input_size=32, resize_size=32)))
    with pytest.raises(fs.ArgumentTypeError, match=r"objectives must be Objective, str or a sequence of \(Objective "
                                                   r"or str\), not list of int"):
        fs.render(net, [3], recipe=recipe)
    with pytest.raises(fs.InvalidObjectiveError, match="position"):
        fs.render(net, "channel(features.3 1)", recipe=recipe)


def test_runtime_takes_memory_sizes_as_the_cli_does():
    assert fs.Runtime(max_memory="2G").max_memory == 2 * 2**30
    assert fs.Runtime(max_memory="512M") == fs.Runtime(max_memory=512 * 2**20)
    with pytest.raises(fs.RuntimeSettingError, match="Bad memory size"):
        fs.Runtime(max_memory="lots")


def test_visualize_filters_has_explicit_arguments():
    import inspect

    parameters = inspect.signature(fs.visualize_filters).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    with pytest.raises(TypeError, match="unexpected keyword argument 'steps'"):
        fs.visualize_filters(SmallConvNet(), "features.3", [0], steps=3)


def test_a_bad_fit_is_a_one_line_filterscope_error():
    from PIL import Image

    model = fs.wrap_model(SmallConvNet(), preprocessing=PLAIN)
    with pytest.raises(fs.InvalidOptionError, match="fit must be one of crop, squash, pad, not 'bogus'"):
        fs.rank_filters(model, [Image.new("RGB", (40, 30))], "features.3", fit="bogus")
    with pytest.raises(fs.InvalidOptionError, match="resize_size"):
        fs.Preprocessing(input_size=64, resize_size=32)


def test_registries_list_and_refuse_duplicates():
    assert fs.PARAMS.names() == ["cppn", "fft", "maco", "pixel"]
    assert {"affine", "lucid", "none"} <= set(fs.TRANSFORMS.names())
    assert {"channel", "neuron", "class", "logit", "layer", "deepdream", "direction", "diversity"} <= set(
        fs.OBJECTIVES.names())
    assert fs.list_models("*lite*") == fs.MODELS.names("*lite*")
    with pytest.raises(ValueError, match="already registered"):
        fs.register_param("pixel")(fs.Param)


@pytest.mark.parametrize(("old", "name"), [("filterscope.circuits.linear", "Intervene"),
                                           ("filterscope.circuits.linear", "Leaf"),
                                           ("filterscope.circuits.weights", "source_calls"),
                                           ("filterscope.circuits", "Intervene")])
def test_layer_hooks_moved_to_filterscope_hooks_and_the_old_paths_warn(old, name):
    import importlib

    from filterscope import hooks

    with pytest.warns(DeprecationWarning, match=rf"^{old}\.{name} moved to filterscope\.hooks\.{name}; import it"):
        found = getattr(importlib.import_module(old), name)
    assert found is getattr(hooks, name)
    assert not hasattr(importlib.import_module(old), "nothing")  # other names: AttributeError as before


@pytest.mark.parametrize(("old", "name", "new"), [
    ("filterscope.atlas.tasks", "render_task", "filterscope.atlas.stages.renders"),
    ("filterscope.atlas.tasks", "scan_shard", "filterscope.atlas.scan"),
    ("filterscope.atlas.circuits", "CircuitTask", "filterscope.atlas.stages.circuits"),
    ("filterscope.atlas.trust", "trust_task", "filterscope.atlas.stages.trust"),
    ("filterscope.atlas.maps", "ICONS_PER_TASK", "filterscope.atlas.stages.maps")])
def test_atlas_work_moved_into_its_stages_and_the_old_paths_warn(old, name, new):
    import importlib

    with pytest.warns(DeprecationWarning, match=rf"^{old}\.{name} moved to {new}\.{name}; import it"):
        found = getattr(importlib.import_module(old), name)
    assert found is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize(("old", "name", "new"), [
    ("filterscope.recipes", "Recipe", "filterscope.engine.recipes"),
    ("filterscope.render", "visualize_filters", "filterscope.engine.render"),
    ("filterscope.objectives", "channel", "filterscope.engine.objectives"),
    ("filterscope.objective_syntax", "parse_objective", "filterscope.engine.objective_syntax"),
    ("filterscope.params", "PARAMS", "filterscope.engine.params"),
    ("filterscope.transforms", "TransformStack", "filterscope.engine.transforms"),
    ("filterscope.results", "RenderResult", "filterscope.engine.results"),
    ("filterscope.identity", "RenderIdentity", "filterscope.engine.identity"),
    ("filterscope.naive", "naive_render", "filterscope.engine.naive"),
    ("filterscope.precision", "choose_precision", "filterscope.runtime.precision"),
    ("filterscope.fusion", "fold_batch_norms", "filterscope.runtime.fusion"),
    ("filterscope.gradients", "redirected_relu", "filterscope.runtime.gradients")])
def test_the_engine_and_the_runtime_have_their_packages_and_the_old_paths_warn(old, name, new):
    import importlib

    with pytest.warns(DeprecationWarning, match=rf"^{old} moved to {new}; import {name} from there"):
        found = getattr(importlib.import_module(old), name)
    assert found is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        importlib.import_module(old).nothing  # noqa: B018 (other names: AttributeError, no warning)


def test_the_runtime_package_keeps_the_runtime_modules_names():
    import inspect

    import filterscope.runtime as runtime
    from filterscope.runtime import core

    public = {name for name, value in vars(core).items() if not name.startswith("_") and
              (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == core.__name__}
    assert public <= set(runtime.__all__) and set(core.__all__) <= set(runtime.__all__)
    assert all(getattr(runtime, name) is getattr(core, name) for name in runtime.__all__)
    assert fs.Runtime is runtime.Runtime and fs.render is fs.engine.render.render


def test_the_build_runs_the_registered_stages_in_dependency_order_and_a_new_stage_is_one_registration():
    from filterscope.atlas.stages import STAGES, Recorded, Stage, register_stage, stage_order

    order = [s.name for s in stage_order()]
    assert order == ["exemplars", "crops", "circuits", "renders", "concepts", "diff", "map-samples", "map-layout",
                     "map-icons", "trust"]
    for stage in stage_order():  # each after the stages it names
        assert all(order.index(before) < order.index(stage.name) for before in stage.after)

    class Late(Stage[int, int]):
        name = "late-test-stage"
        after = ("trust",)

        def record(self, context, task, outcome):
            return Recorded(1)

    try:
        register_stage(Late)
        assert [s.name for s in stage_order()][-1] == "late-test-stage"
        with pytest.raises(fs.AtlasError, match="Unknown atlas stage 'nope'"):
            stage_order(["nope"])
    finally:
        STAGES._entries.pop("late-test-stage")


def test_no_test_module_imports_another_shared_fixtures_live_in_tests_helpers():
    import ast

    tests = Path(__file__).resolve().parent
    offenders = []
    for path in sorted(tests.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.split(".")[-1].startswith("test_"):
                offenders.append(f"{path.name}: from {'.' * node.level}{node.module}")
    assert not offenders, offenders


def test_the_development_page_maps_every_package_and_every_atlas_stage():
    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "development.md").read_text(encoding="utf-8")
    source = root / "src" / "filterscope"
    packages = sorted(p.parent.relative_to(source).as_posix() for p in source.rglob("__init__.py")
                      if p.parent != source)
    missing = [p for p in packages if f"{p.rsplit('/', 1)[-1]}/" not in page]
    assert not missing, f"docs/development.md does not map {missing}"
    from filterscope.atlas.stages import stage_order

    assert all(stage.__module__.rsplit(".", 1)[-1] in page for stage in stage_order())


def test_untyped_json_stays_at_the_edge_of_the_atlas_and_the_microscope():
    """``dict[str, Any]`` is written only where a library's contract asks for it (FastAPI's OpenAPI schema), and
    no parameter or field of the atlas or the microscope takes untyped JSON: records and views are typed."""
    found = []
    for folder in ("atlas", "microscope"):
        for path in (PACKAGE / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
                    text = ast.unparse(node.annotation)
                    assert "dict[str, Any]" not in text and "JSONData" not in text, f"{path.name}: {text}"
            found += [path.name for line in path.read_text().splitlines()
                      if ("dict[str, Any]" in line or "JSONData" in line) and not line.lstrip().startswith("#")]
    assert len(found) <= 5, found
