"""The concepts stage: one module under atlas/stages/ and its registration; a dictionary per layer trained on the
pass's images, stored (file, then records), checked by atlas check, never trained twice, resumed after a kill."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import filterscope as fs
from filterscope.atlas.stages import STAGES, stage_order
from filterscope.atlas.stages.concepts import ConceptSettings, concept_dictionaries, concepts_of
from filterscope.errors import InvalidOptionError

from ..helpers.atlases import conv_stack, write_images

SETTINGS = ConceptSettings(atoms=12, k=2, epochs=3, images=12, exemplars=3)


def test_a_build_trains_a_dictionary_per_layer_records_its_concepts_and_never_trains_it_again(tmp_path):
    write_images(tmp_path / "data", 12)
    with fs.Atlas(tmp_path / "atlas") as atlas:
        summary = atlas.build(conv_stack(), ["4", "6"], units={"4": [0], "6": [0]}, recipes=(),
                              dataset=tmp_path / "data", exemplars=2, stages=[SETTINGS])
        assert summary.of("concepts").done == 2 and not summary.failures
        layer = atlas.layer("6")
        (record,) = concept_dictionaries(atlas.store, layer.id)
        assert record.settings == SETTINGS and [q.name for q in record.quality] == ["SAE", "channels", "PCA"]
        found = record.load(atlas.path)
        assert found.atoms.shape == (12, layer.channels) and record.vectors == found.vectors > 0
        concepts = concepts_of(atlas.store, record.id)
        assert sorted(c.concept for c in concepts) == list(range(12))
        assert [c.usage for c in concepts] == sorted((c.usage for c in concepts), reverse=True)
        images = len(atlas.store.pass_images(atlas.store.latest_pass(layer.id).id))
        for concept in concepts:
            assert concept.unit == int(found.atoms[concept.concept].abs().argmax())
            values = [e.value for e in concept.exemplars]
            assert values == sorted(values, reverse=True) and all(0 <= e.image < images for e in concept.exemplars)
        (one,) = concepts_of(atlas.store, record.id, concepts[0].concept)
        assert one == concepts[0] and atlas.concepts("6") == concepts
        assert "concepts" in [s.name for s in stage_order()] and STAGES.get("concepts").after[0] == "exemplars"
        assert atlas.check() == []
        before = (atlas.path / record.file).read_bytes()
        again = atlas.build(conv_stack(), ["4", "6"], units={"4": [0], "6": [0]}, recipes=(),
                            dataset=tmp_path / "data", exemplars=2, stages=[SETTINGS])
        assert again.of("concepts").done == 0 and (atlas.path / record.file).read_bytes() == before
        (atlas.path / record.file).unlink()  # a damaged file: atlas check names it, a repair trains it again
        (problem,) = atlas.check()
        assert problem.kind == "concepts" and problem.what == "concept dictionary of 6"
        atlas.check(repair=True)
        assert concept_dictionaries(atlas.store, layer.id) == []
        third = atlas.build(conv_stack(), ["4", "6"], units={"4": [0], "6": [0]}, recipes=(),
                            dataset=tmp_path / "data", exemplars=2, stages=[SETTINGS])
        assert third.of("concepts").done == 1 and (atlas.path / concept_dictionaries(atlas.store, layer.id)[0].file
                                                   ).is_file()


def test_an_atlas_without_the_stage_has_no_concept_tables_and_reads_none(tmp_path):
    write_images(tmp_path / "data", 4)
    with fs.Atlas(tmp_path / "atlas") as atlas:
        atlas.build(conv_stack(), "6", units=[0], recipes=(), dataset=tmp_path / "data", exemplars=2)
        assert concept_dictionaries(atlas.store, atlas.layer("6").id) == [] and concepts_of(atlas.store, 1) == []
        with pytest.raises(fs.AtlasError, match="No concepts of 6 in .*--concepts N"):
            atlas.concepts("6")
        assert atlas.check() == []
    with sqlite3.connect(tmp_path / "atlas" / "atlas.sqlite") as conn:
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name LIKE 'concept%'").fetchall()


def test_too_few_images_is_said_and_bad_settings_are_named(tmp_path):
    write_images(tmp_path / "data", 4)
    lines: list[str] = []

    class Progress(fs.atlas.BuildProgress):
        def message(self, text: str, *, warning: bool = False) -> None:
            lines.append(text)

    summary = fs.build_atlas(tmp_path / "atlas", conv_stack(), "6", units=[0], recipes=(), dataset=tmp_path / "data",
                             exemplars=2, stages=[SETTINGS], progress=Progress())
    assert summary.of("concepts").done == 0
    assert any("concepts: 6 has 4 pass images; a dictionary needs at least 10" in line for line in lines)
    with pytest.raises(InvalidOptionError, match="concepts: atoms must be at least 2"):
        ConceptSettings(atoms=1)


_KILLED = """
import sys
import filterscope as fs
from filterscope.atlas.stages.concepts import ConceptSettings
sys.path.insert(0, sys.argv[3])
from tests.helpers.atlases import conv_stack
fs.build_atlas(sys.argv[1], conv_stack(), ["4", "6"], units={"4": [0], "6": [0]}, recipes=(), dataset=sys.argv[2],
               exemplars=2, stages=[ConceptSettings(atoms=12, k=2, epochs=int(sys.argv[4]), images=12)])
"""


@pytest.mark.integration
def test_a_build_killed_in_the_concepts_stage_resumes_without_training_a_finished_dictionary_again(tmp_path):
    write_images(tmp_path / "data", 12)
    out, root = tmp_path / "atlas", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    command = [sys.executable, "-c", _KILLED, str(out), str(tmp_path / "data"), root]
    command.append("400")  # epochs: a few seconds a dictionary, time to kill the build between the two
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, rows = time.monotonic() + 120, []
    while time.monotonic() < deadline and process.poll() is None and not rows:
        try:
            with sqlite3.connect(f"file:{out / 'atlas.sqlite'}?mode=ro", uri=True, timeout=5) as conn:
                rows = conn.execute("SELECT id, layer_id, file FROM concept_dictionaries").fetchall()
        except sqlite3.Error:
            rows = []
        time.sleep(0.05)
    assert process.poll() is None, "the build ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
    (first,) = rows
    kept = (out / first[2]).read_bytes()
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    with sqlite3.connect(out / "atlas.sqlite") as conn:
        after = conn.execute("SELECT id, layer_id, file FROM concept_dictionaries ORDER BY id").fetchall()
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert after[0] == first and len(after) == 2 and (out / first[2]).read_bytes() == kept
