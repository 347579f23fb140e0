"""The red-team audit: each manipulation does what it claims on a tiny network, and the audit's numbers are what
their definitions say."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import filterscope as fs
from filterscope.audit import AuditReport, audit_figure, audit_layer, manipulate
from filterscope.audit.audit import SILENT_SHARE, suspicion
from filterscope.audit.manipulations import SILENT_SCALE, layer_inputs, natural_drift, optimizer_images
from filterscope.cli import app
from filterscope.trust.afc import RENDER_SHARE
from filterscope.trust.unit import unit_maxima

from ..helpers.models import colour_independent, save_photos, small_net, smooth_photos
from ..helpers.recipes import TRUST_RECIPE as RECIPE

LAYER = "features.4"


@pytest.fixture(scope="module")
def manipulated():
    model = small_net()
    photos = smooth_photos(200, seed=1)
    optimized = optimizer_images(model, LAYER, [0, 1, 2, 3], RECIPE, seed=1)
    return model, photos, manipulate(model, LAYER, photos[0::2], fooling={5: 9}, silent=[7], optimized=optimized)


def test_a_fooling_unit_is_itself_on_photos_and_its_render_shows_its_target(manipulated):
    model, photos, man = manipulated
    held = photos[1::2]
    drift = natural_drift(model, man, held)
    assert drift.fooling < 1e-3 and drift.gate_open == 0.0 and drift.error == 0.0  # untouched units exactly kept
    assert drift.overlap == {5: 1.0, 7: 1.0}
    unseen = optimizer_images(model, LAYER, [10, 11], RECIPE, steps=(1, RECIPE.steps), seed=2)
    assert float(man.gate(layer_inputs(model, LAYER, unseen)).median()) > 0.5  # an optimizer's images open it
    ref = fs.layers.resolve_layer(model, LAYER)
    peaks = unit_maxima(model, ref, held).amax(dim=0)

    def driven(images: torch.Tensor) -> tuple[float, float]:  # the original network's units 5 and 9, per natural peak
        p = unit_maxima(model, ref, images)[0]
        return float(p[5] / peaks[5]), float(p[9] / peaks[9])

    fooled = fs.render(man.model, [fs.Channel(LAYER, 5)], recipe=RECIPE, seed=0).images
    own = fs.render(model, [fs.Channel(LAYER, 5), fs.Channel(LAYER, 9)], recipe=RECIPE, seed=0).images
    target_by_fooled, target_by_own = driven(fooled)[1], driven(own[:1])[1]
    assert target_by_fooled > 0.8 * driven(own[1:])[1]  # drives the target nearly as its own render does
    assert target_by_fooled > 2 * target_by_own  # and far more than the unit's honest render


def test_a_silent_unit_is_the_unit_scaled_and_the_original_is_untouched(manipulated):
    model, photos, man = manipulated
    ref = fs.layers.resolve_layer(model, LAYER)
    before, after = unit_maxima(model, ref, photos), unit_maxima(man.model, ref, photos)
    assert torch.allclose(after[:, 7], before[:, 7] * SILENT_SCALE, rtol=1e-5, atol=1e-9)
    assert man.model.module is not model.module and not model.module.get_submodule(LAYER)._forward_hooks


@pytest.mark.parametrize("kwargs, message", [
    ({"fooling": {5: 9}, "silent": [5]}, "A unit can be manipulated once"),
    ({"silent": [99]}, "Unit 99 is out of range: the layer has units 0-15"),
    ({"fooling": {5: 7}, "silent": [7]}, "Fooling target 7 is itself manipulated"),
    ({"fooling": {5: 9}}, "Fooling units need an optimizer's images"),
])
def test_bad_manipulations_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(fs.InvalidOptionError, match=message):
        manipulate(small_net(), LAYER, smooth_photos(20), **kwargs)


@pytest.fixture(scope="module")
def report():
    return audit_layer(small_net(), LAYER, smooth_photos(80, seed=3), colour_independent(), fooling=2, silent=2,
                       untouched=6, recipe=RECIPE, copies=2)


def test_the_audit_scores_are_the_definitions(report):
    kinds = [u.kind for u in report.units]
    assert kinds.count("fooling") == 2 and kinds.count("silent") == 2 and kinds.count("untouched") == 6
    clean = [u for u in report.units if u.kind == "untouched"]
    for score in report.scores():
        bad = [u for u in report.units if u.kind != "untouched" and score.kind in ("all", u.kind)]
        pairs = [(b.suspicion[score.signal], c.suspicion[score.signal]) for b in bad for c in clean]
        mann_whitney = sum(1.0 if b > c else 0.5 if b == c else 0.0 for b, c in pairs) / len(pairs)
        assert score.auroc == pytest.approx(mann_whitney)
        if score.detected is not None:
            assert score.detected == sum(score.signal in u.flagged for u in bad) / len(bad)
            assert score.false_alarm == sum(score.signal in u.flagged for u in clean) / len(clean)
    silent = next(s for s in report.scores() if s.signal == "silent" and s.kind == "silent")
    assert (silent.auroc, silent.detected) == (1.0, 1.0)  # a unit scaled by 1e-3 is far below the layer's median


def test_the_suspicions_in_closed_form(report):
    record = report.units[0].trust
    values, flagged = suspicion(record, peak=0.5 * SILENT_SHARE, median=1.0, reached=5.0)
    assert values["silent"] == pytest.approx(-torch.log10(torch.tensor(0.5 * SILENT_SHARE)).item())
    assert values["overdrive"] == pytest.approx(torch.log10(torch.tensor(5.0 / (0.5 * SILENT_SHARE))).item())
    assert "silent" in flagged and "any" in flagged
    test = record.score("renders").test  # type: ignore[union-attr]
    assert test is not None and values["renders-2afc"] == -test.score  # the exact score, over every query pair
    assert ("renders-2afc" in flagged) == (test.p_value <= test.alpha) and test.share == RENDER_SHARE


def test_an_audit_report_round_trips_and_draws(report):
    again = AuditReport.from_dict(json.loads(report.to_json()))
    assert again == report and again.scores() == report.scores()
    figure = audit_figure(report)
    assert len(figure.axes) == 2 and figure.axes[0].get_title().startswith("fooling units (2)")


@pytest.mark.parametrize("args, message", [
    (["--untouched", "1"], "--untouched must be at least 2 (got 1)"),
    (["--judge", "nope"], "nope"),
    (["--recipe", "nope"], "nope"),
])
def test_audit_errors_are_one_line(tmp_path, args, message):
    folder = save_photos(tmp_path / "photos", 4)
    result = CliRunner().invoke(app, ["audit", "efficientnet_lite0", "-l", "_blocks.8", "--images", str(folder),
                                      *args])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_audit_refuses_too_few_photos(tmp_path):
    folder = save_photos(tmp_path / "photos", 4)
    result = CliRunner().invoke(app, ["audit", "efficientnet_lite0", "-l", "_blocks.8", "--images", str(folder)])
    assert result.exit_code == 1 and "--images gave 4 photos; the audit needs at least 40" in result.output


@pytest.mark.integration
def test_the_audit_command_writes_its_table_json_and_figure(tmp_path):
    folder = save_photos(tmp_path / "photos", 40)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(RECIPE.to_json())
    spec = f"{__file__.rsplit('/', 2)[0]}/helpers/models.py:small_net"
    result = CliRunner().invoke(app, ["audit", spec, "-l", LAYER, "--images", str(folder), "--fooling", "1",
                                      "--silent", "1", "--untouched", "3", "--copies", "1", "--recipe", str(recipe),
                                      "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "audit: manipulating 1 fooling and 1 silent units of features.4" in result.output
    assert "silent        silent           1.00      100%            0%" in result.output
    saved = AuditReport.from_dict(json.loads((tmp_path / "out" / "audit.json").read_text()))
    assert [u.kind for u in saved.units] == ["fooling", "silent", "untouched", "untouched", "untouched"]
    assert (tmp_path / "out" / "audit.png").stat().st_size > 10_000
