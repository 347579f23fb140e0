"""The README's Python section runs as written, with ``import filterscope as fs`` as its only import."""

import re
from pathlib import Path

import pytest

import filterscope as fs

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API"):text.index("\n## ", text.index("## Python API") + 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_readme_has_python_blocks_that_import_only_filterscope():
    blocks = _python_blocks()
    assert len(blocks) >= 5
    imports = [line.strip() for block in blocks for line in block.splitlines()
               if re.match(r"\s*(import|from)\s", line)]
    assert imports == ["import filterscope as fs"]


@pytest.mark.integration
def test_the_readme_python_section_runs(tmp_path, monkeypatch):
    from PIL import Image
    from skimage import data

    Image.fromarray(data.chelsea()).save(tmp_path / "cat.jpg")
    monkeypatch.chdir(tmp_path)
    # The code runs as written; only the recipes' step counts shrink, so that it takes seconds, not minutes.
    fast = {"steps": 2, "late_steps_factor": 1.0}
    paper = fs.PAPER_RECIPE.replace(scales=6, **fast)
    for function in (fs.render, fs.iter_render, fs.visualize_filters):
        monkeypatch.setitem(function.__kwdefaults__, "recipe", paper)
    monkeypatch.setitem(fs.RECIPES, "filterscope", fs.RECIPES["filterscope"].replace(**fast))
    monkeypatch.setattr(fs.Recipe, "__post_init__", _capped(fs.Recipe.__post_init__))
    objectives = dict(fs.OBJECTIVES._entries)

    namespace: dict[str, object] = {}
    try:
        for block in _python_blocks():
            exec(compile(block, str(README), "exec"), namespace)
    finally:
        fs.OBJECTIVES._entries.clear()
        fs.OBJECTIVES._entries.update(objectives)

    result = namespace["result"]
    assert isinstance(result, fs.RenderResult) and (result.values > result.initial_values).all()
    assert len(list((tmp_path / "out" / "mine").glob("efficientnet_lite0-_blocks.15-f0*.png"))) == 2
    assert namespace["maps"].maps.shape == (3, 224, 224)
    assert namespace["ranking"].top[:3] == namespace["study"].rows[0].top[:3]
    assert namespace["quality"].robustness > 0


def _capped(post_init):
    """Recipe.__post_init__ that also caps the steps a README recipe asks for (Recipe(steps=30))."""

    def wrapper(self):
        if self.steps > 2:
            object.__setattr__(self, "steps", 2)
        post_init(self)

    return wrapper


@pytest.mark.integration
def test_the_readme_atlas_example_runs(tmp_path, monkeypatch):
    from filterscope.demo import write_reference_set

    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Atlas"):text.index("\n## ", text.index("## Atlas") + 1)]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    monkeypatch.chdir(tmp_path)
    write_reference_set(tmp_path / "out" / "readme-photos", 6)
    monkeypatch.setitem(fs.RECIPES, "paper", fs.PAPER_RECIPE.replace(scales=2, steps=2))  # seconds, not minutes
    namespace: dict[str, object] = {}
    exec(compile(block, str(README), "exec"), namespace)
    unit = namespace["unit"]
    assert unit.renders[0].status == "ok" and len(unit.exemplars["max"]) == 6 and unit.stats.images == 6
    assert (tmp_path / "out" / "readme-atlas" / unit.renders[0].file).is_file()


@pytest.mark.integration
def test_the_readme_activation_atlas_example_runs(tmp_path, monkeypatch):
    from filterscope.demo import write_reference_set

    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Activation atlas"):text.index("\n## ", text.index("## Activation atlas") + 1)]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    monkeypatch.chdir(tmp_path)
    write_reference_set(tmp_path / "out" / "readme-photos", 24)
    monkeypatch.setitem(fs.RECIPES, "filterscope", fs.RECIPES["filterscope"].replace(steps=2))  # seconds
    namespace: dict[str, object] = {}
    exec(compile(block, str(README), "exec"), namespace)
    found = namespace["found"]
    assert isinstance(found, fs.ActivationMap) and found.cells and all(c.icon for c in found.cells)
    assert sum(c.count for c in found.cells) <= 24 and all(c.label_name for c in found.cells)
    assert (tmp_path / "out" / "readme-map.png").is_file()
