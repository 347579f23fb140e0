"""``filterscope concepts``: the table, the dictionary file, the JSON and the figure; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from filterscope.cli import app
from filterscope.concepts import load_dictionary

from ..helpers.models import save_photos

SPEC = f"{Path(__file__).resolve().parents[1]}/helpers/models.py:small_net"


def test_the_concepts_command_prints_the_table_and_writes_the_dictionary_json_and_figure(tmp_path):
    folder = save_photos(tmp_path / "photos", 12)
    result = CliRunner().invoke(app, ["concepts", SPEC, "-l", "features.4", "--dataset", str(folder), "--atoms", "32",
                                      "-k", "4", "--views", "1", "--stability", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "smallnet features.4: 32 concepts (2 x 16 channels, topk k=4)" in result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("dictionary"))
    assert [line.split()[0] for line in lines[header + 1:header + 4]] == ["SAE", "channels", "PCA"]
    assert "stability against seed 1: matched cosine" in result.output
    found = load_dictionary(tmp_path / "out" / "features.4.concepts")
    assert found.atoms.shape == (32, 16) and found.settings.k == 4 and len(found.held_out) == 2
    assert found.vectors == 10 * (2 + 1) * 16 * 16 and found.stability is not None
    saved = json.loads((tmp_path / "out" / "concepts.json").read_text())
    assert [q["name"] for q in saved["quality"]] == ["SAE", "channels", "PCA"] and saved["layer"] == "features.4"
    assert saved["quality"][0]["l0"] == pytest.approx(4.0) and 0 < saved["train_fve"] <= 1
    assert (tmp_path / "out" / "concepts.png").stat().st_size > 10_000
    codes = found.encode(torch.randn(5, 16))
    assert ((codes != 0).sum(1) <= 4).all()


@pytest.mark.parametrize(("args", "message"), [
    (["-k", "0"], "-k must be at least 1 (got 0)"),
    (["--kind", "relu"], "--kind must be one of topk, batchtopk (got 'relu')"),
    (["--atoms", "4", "-k", "8"], "-k (8) must be at most --atoms (4)"),
    (["--views", "-1"], "--views must be at least 0 (got -1)")])
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    folder = save_photos(tmp_path / "photos", 12)
    result = CliRunner().invoke(app, ["concepts", SPEC, "-l", "features.4", "--dataset", str(folder), *args])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_too_few_images_are_named(tmp_path):
    folder = save_photos(tmp_path / "photos", 3)
    result = CliRunner().invoke(app, ["concepts", SPEC, "-l", "features.4", "--dataset", str(folder)])
    assert result.exit_code == 1 and "--dataset gave 3 images; concepts need at least 10" in result.output
