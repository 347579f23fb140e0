"""Running the docs' commands as written, and every recipe shrunk so that they take seconds."""

from __future__ import annotations

import glob
import inspect
import os
import re
import shlex
import subprocess
import sys
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import filterscope as fs


def run_command(command: str, where: str) -> None:
    words = shlex.split(command, comments=True)
    if words[0] == "filterscope":
        from typer.testing import CliRunner

        from filterscope.cli import app

        args = [match for word in words[1:] for match in globbed(word)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, f"{where}: {command}\n{result.output[-3000:]}"
    elif words[:2] == ["pip", "install"]:
        for requirement in words[2:]:
            name = re.split(r"[\[<>=]", requirement)[0]
            assert metadata.version(name), f"{where}: {requirement} is not installed"
    else:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, f"{where}: {command}\n{done.stderr[-3000:]}"


def globbed(word: str) -> list[str]:
    """A word as bash expands it: a pattern to the files it matches (itself when none do)."""
    return (sorted(glob.glob(word)) or [word]) if "*" in word else [word]


def shrink_recipes(monkeypatch) -> None:
    """Every recipe capped at 4 scales of 8 steps: the recipes already made, and every one made from now on."""
    post_init = fs.Recipe.__post_init__

    def capped(self):
        object.__setattr__(self, "steps", min(self.steps, 8))
        object.__setattr__(self, "scales", min(self.scales, 4))
        post_init(self)

    monkeypatch.setattr(fs.Recipe, "__post_init__", capped)
    for name, recipe in list(fs.RECIPES.items()):
        monkeypatch.setitem(fs.RECIPES, name, replace(recipe))
    for function in (fs.render, fs.iter_render, fs.visualize_filters):
        monkeypatch.setitem(inspect.unwrap(function).__kwdefaults__, "recipe", replace(fs.PAPER_RECIPE))
