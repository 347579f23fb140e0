"""The docs site: it builds offline with no warnings, and every code block of every page runs as written.

Each page runs in a fresh folder, its blocks in order (Python blocks share one namespace):

* ``bash`` blocks: ``filterscope ...`` lines run in this process (Typer's runner), and must exit 0; ``pip
  install X`` lines are checked (X is installed), not run; other lines (``python ...``, ``printf ... > F``) run
  in bash with this environment's ``bin/`` first on ``PATH``;
* ``python`` blocks are executed; ``toml`` blocks are files, written under the name their directive gives;
* ``text`` blocks are output or layouts, not code.

A page changes how it is run only by saying so, in an HTML comment on its own line (``<!-- docs-test: ... -->``):
after the title for the page (``fast``: recipes capped at 4 scales of 8 steps, and the page's visible note
says so; ``resnet``: ResNet weights are a random state dict served as the hub file), before a block for that
block (``skip REASON``, ``file NAME``, ``excerpt PATH``: the block is quoted from that file;
``background``: each line is a server, started, asked for ``/`` and stopped).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

import filterscope as fs

from .helpers.docs_runner import run_command, shrink_recipes

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
DIRECTIVE = re.compile(r"^<!-- docs-test: (.*?) -->$", re.MULTILINE)
FAST_NOTE = "with\n    every recipe shrunk to at most 4 scales of 8 steps"
RUN, SHOWN = {"bash", "python", "toml"}, {"text"}
SKIPS_ALLOWED = 3  # the set-up commands, a cluster of several machines: listed by test_few_blocks_are_skipped


@dataclass
class Block:
    language: str
    code: str
    line: int
    directives: list[str] = field(default_factory=list)


@dataclass
class Page:
    path: Path
    directives: list[str]
    blocks: list[Block]

    @property
    def name(self) -> str:
        return str(self.path.relative_to(DOCS))


def read_page(path: Path) -> Page:
    text = path.read_text(encoding="utf-8")
    blocks, page_directives = [], []
    for match in DIRECTIVE.finditer(text):
        after = text[match.end() + 1:]
        if not after.startswith("```") and not after.startswith("<!-- docs-test"):
            page_directives += match.group(1).split()
    for match in FENCE.finditer(text):
        before = text[:match.start()].splitlines()
        directives = []
        while before and DIRECTIVE.match(before[-1]):
            directives.insert(0, DIRECTIVE.match(before.pop()).group(1))
        blocks.append(Block(match.group(1), match.group(2), text[:match.start()].count("\n") + 1, directives))
    return Page(path, page_directives, blocks)


PAGES = [read_page(path) for path in sorted(DOCS.rglob("*.md"))]


@pytest.mark.integration
def test_the_site_builds_offline_with_no_warnings(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNING" not in done.stderr, done.stderr[-3000:]
    pages = list(site.rglob("*.html"))
    assert len(pages) >= 25
    external = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=["'](?:https?:)?//""", re.IGNORECASE)
    for page in pages:
        assert not external.search(page.read_text(encoding="utf-8")), f"{page} loads something from the network"
    for sheet in site.rglob("*.css"):
        assert "fonts.googleapis" not in sheet.read_text(encoding="utf-8"), sheet
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "filterscope atlas map" in cli and "--max-memory" in cli  # generated from the Typer app
    assert "trust_units" in (site / "reference" / "python" / "index.html").read_text(encoding="utf-8")
    assert "map_cells" in (site / "reference" / "atlas-schema" / "index.html").read_text(encoding="utf-8")


def test_every_block_is_runnable_code_or_shown_output():
    for page in PAGES:
        for block in page.blocks:
            assert block.language in RUN | SHOWN, f"{page.name}:{block.line}: a ```{block.language} block"
            if block.language == "toml":
                assert any(d.startswith("file ") for d in block.directives), f"{page.name}:{block.line}"
        if "fast" in page.directives:
            assert FAST_NOTE in page.path.read_text(encoding="utf-8"), f"{page.name} does not say it is shrunk"


def test_few_blocks_are_skipped_and_each_says_why():
    skipped = [(page.name, block.line, d) for page in PAGES for block in page.blocks for d in block.directives
               if d.startswith("skip")]
    assert all(len(reason.split()) >= 4 for _, _, reason in skipped), skipped
    assert len(skipped) <= SKIPS_ALLOWED, skipped


def test_the_readme_is_short_and_points_into_the_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link
    assert "make demo" in readme and "make test" in readme


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    """ResNet-34 weights as the hub cache would hold them, but random: nothing is downloaded in tests."""
    home = tmp_path_factory.mktemp("torch-home")
    state = fs.load_model("resnet34", weights="random", calibrate=False).module.state_dict()
    blob = home / "weights.pth"
    import torch

    torch.save(state, blob)
    name = f"resnet34-{hashlib.sha256(blob.read_bytes()).hexdigest()[:8]}.pth"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    blob.rename(home / "hub" / "checkpoints" / name)
    return home, name


RUNNABLE_PAGES = [page for page in PAGES if any(b.language in RUN for b in page.blocks)]


@pytest.mark.integration
@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=[page.name for page in RUNNABLE_PAGES])
def test_the_page_runs_as_written(page, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    if "fast" in page.directives:
        shrink_recipes(monkeypatch)
    if "resnet" in page.directives:
        _serve_resnet(monkeypatch, *request.getfixturevalue("resnet_weights"))
    objectives = dict(fs.OBJECTIVES._entries)
    namespace: dict[str, object] = {}
    try:
        for block in page.blocks:
            where = f"{page.name}:{block.line}"
            if block.language in SHOWN or any(d.startswith("skip") for d in block.directives):
                continue
            if any(d.startswith("excerpt ") for d in block.directives):
                _check_excerpt(block, where)
            elif block.language == "toml":
                (tmp_path / _directive(block, "file")).write_text(block.code, encoding="utf-8")
            elif block.language == "python":
                exec(compile(block.code, where, "exec"), namespace)
            elif "background" in block.directives:
                for command in _commands(block.code):
                    _serve(command, where)
            else:
                for command in _commands(block.code):
                    run_command(command, where)
    finally:
        fs.OBJECTIVES._entries.clear()
        fs.OBJECTIVES._entries.update(objectives)


def _directive(block: Block, name: str) -> str:
    return next(d.split(None, 1)[1] for d in block.directives if d.startswith(name + " "))


def _check_excerpt(block: Block, where: str) -> None:
    source = (ROOT / _directive(block, "excerpt")).read_text(encoding="utf-8")
    for line in block.code.splitlines():
        assert line.strip() in source, f"{where}: {line.strip()!r} is not in {_directive(block, 'excerpt')}"


def _commands(code: str) -> list[str]:
    return [c for c in (part.strip() for part in code.replace("\\\n", " ").splitlines()) if c and not c.startswith("#")]


def _serve(command: str, where: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    words = shlex.split(command, comments=True)
    assert words[:2] == ["filterscope", "serve"], where
    with subprocess.Popen([str(Path(sys.executable).parent / "filterscope"), *words[1:], "--port", str(port)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as server:
        try:
            _wait_for(server, f"http://127.0.0.1:{port}/", f"{where}: {command}")
        finally:
            server.terminate()
            server.wait(timeout=30)


def _wait_for(server: subprocess.Popen, url: str, what: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                assert answer.status == 200 and b"filterscope" in answer.read()
            return
        except OSError:
            assert server.poll() is None, f"{what} exited: {server.stdout.read()[-2000:]}"
            assert time.monotonic() < deadline, f"{what} never answered"
            time.sleep(0.5)


def _serve_resnet(monkeypatch, home: Path, name: str) -> None:
    from filterscope.zoo import registry
    from filterscope.zoo.weights import UrlWeights

    monkeypatch.setenv("TORCH_HOME", str(home))
    spec = registry.MODELS._entries["resnet34"]
    monkeypatch.setitem(registry.MODELS._entries, "resnet34", replace(spec, weights=UrlWeights(f"http://127.0.0.1:9/{name}")))
