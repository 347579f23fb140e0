"""The README's code runs as written: its Python block (``import filterscope as fs`` its only import) and its
five commands, each with recipes shrunk to 4 scales of 8 steps. The docs' pages are run by ``test_docs.py``."""

import re
from pathlib import Path

import pytest

import filterscope as fs

from .helpers.docs_runner import run_command as _run
from .helpers.docs_runner import shrink_recipes as _shrink_recipes

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_readme_python_imports_only_filterscope():
    imports = [line.strip() for block in _blocks("python") for line in block.splitlines()
               if re.match(r"\s*(import|from)\s", line)]
    assert imports == ["import filterscope as fs"]


@pytest.mark.integration
def test_the_readme_runs(tmp_path, monkeypatch):
    from PIL import Image
    from skimage import data

    from filterscope.demo import write_reference_set

    monkeypatch.chdir(tmp_path)
    Image.fromarray(data.chelsea()).save("cat.jpg")
    write_reference_set("photos", 8)
    _shrink_recipes(monkeypatch)
    namespace: dict[str, object] = {}
    (python,) = _blocks("python")
    exec(compile(python, str(README), "exec"), namespace)
    assert len(list((tmp_path / "out" / "mine").glob("efficientnet_lite0-_blocks.15-f0*.png"))) == 2
    assert len(namespace["ranking"].top) == 10
    _, commands = _blocks("bash")
    lines = [line.split("  #")[0].strip() for line in commands.splitlines() if line.strip()]
    assert len(lines) == 5
    for line in lines[:-1]:  # the last one is the server: test_docs starts and asks it
        _run(line, "README")
    assert fs.Atlas("out/atlas").unit("_blocks.10", 3).exemplars["max"]
