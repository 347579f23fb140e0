"""Labels with evidence: the metrics against scikit-learn and NeuronEval's two sanity checks, formulas parsed and
evaluated, planted formulas recovered, a shuffled control, and the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from typer.testing import CliRunner

from filterscope.cli import app
from filterscope.errors import InvalidOptionError
from filterscope.labels import ConceptMatrix, check_label, from_wordnet_ids, label_units, parse, wordnet_id
from filterscope.labels.formula import And, Concept, Not, Or
from filterscope.labels.metrics import METRICS

from ..helpers.models import save_photos


def test_the_metrics_equal_scikit_learns():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(300, generator=g)
    labels = torch.rand(300, 3, generator=g) < torch.tensor([0.1, 0.3, 0.6])
    for j in range(3):
        y = labels[:, j].numpy()
        ap, prevalence = average_precision_score(y, values.numpy()), y.mean()
        assert float(METRICS["auprc"](values, labels)[j]) == pytest.approx((ap - prevalence) / (1 - prevalence))
        assert float(METRICS["auc"](values, labels)[j]) == pytest.approx(roc_auc_score(y, values.numpy()))


def _units(count: int = 200, n: int = 1000, seed: int = 0):
    """Units that fire on a rare concept (2 % of the images), with noise."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(count):
        concept = torch.rand(n, generator=g) < 0.02
        yield concept.double() + 0.3 * torch.randn(n, generator=g, dtype=torch.float64), concept, g


def _lowered(name: str, perturb) -> float:
    """The share of units whose score drops when their description is perturbed."""
    drops = [float(METRICS[name](values, perturb(concept, g)[:, None])[0]) <
             float(METRICS[name](values, concept[:, None])[0]) for values, concept, g in _units()]
    return sum(drops) / len(drops)


def _missing(concept, g):  # the description covers half of what the unit fires on
    positives = torch.nonzero(concept).flatten()
    dropped = concept.clone()
    dropped[positives[torch.randperm(len(positives), generator=g)[: len(positives) // 2]]] = False
    return dropped


def _extra(concept, g):  # the description also claims as many random images
    extra = concept.clone()
    extra[torch.randperm(len(concept), generator=g)[: int(concept.sum())]] = True
    return extra


@pytest.mark.parametrize("name", ["auprc", "f1", "iou", "pearson"])
def test_neuroevals_sanity_checks_pass_for_the_chosen_metrics(name):
    assert _lowered(name, _missing) >= 0.9 and _lowered(name, _extra) >= 0.9


def test_auc_fails_the_missing_labels_check():
    assert _lowered("auc", _missing) < 0.8  # it hardly moves when rare positives go missing: the check can fail


def test_formulas_parse_print_and_evaluate():
    names = ["dog", "grass", "great white shark", "terrier"]
    formula = parse("terrier OR (dog AND NOT grass)", names)
    assert formula == Or(Concept(3), And(Concept(0), Not(Concept(1))))
    assert formula.text(names) == "terrier OR dog AND NOT grass" and formula.length == 3
    assert parse(formula.text(names), names) == formula
    assert parse("NOT (dog OR Great White Shark)", names).text(names) == "NOT (dog OR great white shark)"
    present = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]], dtype=torch.bool)
    assert formula.evaluate(present).tolist() == [True, False, True, False]
    for text, message in (("dgo", "unknown concept 'dgo'"), ("(dog", "not closed"), ("dog AND", "concept is missing"),
                          ("dog grass )", "unknown concept 'dog grass'")):
        with pytest.raises(InvalidOptionError, match=message):
            parse(text, names)


def _planted(seed: int = 0, n: int = 800, k: int = 10):
    g = torch.Generator().manual_seed(seed)
    present = torch.rand(n, k, generator=g) < 0.25
    matrix = ConceptMatrix(tuple(f"c{i}" for i in range(k)), tuple(f"w{i}" for i in range(k)), (6,) * k, present,
                           "planted")
    formulas = [Or(Concept(0), Concept(1)), And(Concept(2), Concept(3)), And(Concept(4), Not(Concept(5))),
                Or(Concept(6), And(Concept(7), Concept(8))), And(Concept(9), Not(Concept(0))), Concept(1),
                Or(Concept(3), Concept(9)), And(Concept(5), Concept(6)), And(Concept(8), Not(Concept(2))),
                Or(Concept(7), Concept(4))]
    values = torch.stack([f.evaluate(present).double() + 0.2 * torch.randn(n, generator=g, dtype=torch.float64)
                          for f in formulas], dim=1)
    return matrix, formulas, values


def test_planted_or_and_not_units_are_recovered_and_significant():
    matrix, formulas, values = _planted()
    labels = label_units(values, matrix, null_draws=19)
    recovered = [torch.equal(parse(label.formula, matrix.names).evaluate(matrix.present),
                             planted.evaluate(matrix.present)) for label, planted in zip(labels, formulas)]
    assert sum(recovered) >= 9, [(label.formula, p.text(matrix.names)) for label, p in zip(labels, formulas)]
    assert all(label.significant and label.p_value == pytest.approx(1 / 20) for label in labels)
    top = labels[0]
    assert top.coverage == len(top.support) / 20 and set(top.support).isdisjoint(top.contradict)


def test_shuffled_activations_are_significant_for_at_most_5_percent_of_units():
    matrix, _, values = _planted(1)
    g = torch.Generator().manual_seed(2)
    shuffled = torch.stack([values[torch.randperm(values.shape[0], generator=g), u % values.shape[1]]
                            for u in range(40)], dim=1)
    labels = label_units(shuffled, matrix, null_draws=19)
    assert sum(label.significant for label in labels) <= 0.05 * len(labels)


def test_any_description_is_scored_the_same_way():
    matrix, _, values = _planted()
    right = check_label(values, matrix, 3, "c6 OR (c7 AND c8)")
    wrong = check_label(values, matrix, 3, "c0 AND NOT c6")
    assert right.score > 0.9 > 0.1 > wrong.score and right.p_value < 1e-6 and right.formula == "c6 OR c7 AND c8"


def test_concepts_come_from_wordnet_ids_lifted_up_the_hierarchy():
    assert wordnet_id("photos/n02094433_yorkshire_terrier.jpg") == "n02094433"
    assert wordnet_id("n02094433/img1.jpg") == "n02094433" and wordnet_id("cat.jpg") is None
    matrix = from_wordnet_ids(["n02094433", "n02096294", "n01443537", None])  # Yorkshire, Australian terrier, goldfish
    terrier = matrix.names.index("terrier")
    assert matrix.present[:, terrier].tolist() == [True, True, False, False]
    assert matrix.present[3].sum() == 0 and "Yorkshire terrier" in matrix.names
    assert matrix.source == "wordnet ids"


def test_the_label_command_labels_and_checks(tmp_path):
    folder = tmp_path / "photos"
    save_photos(folder, 16)
    wnids = ["n02094433", "n02096294", "n01443537", "n02123045"]  # two terriers, a goldfish, a tabby cat
    for i, path in enumerate(sorted(folder.iterdir())):
        path.rename(folder / f"{wnids[i % 4]}_{i:02d}.png")
    spec = f"{Path(__file__).parents[1] / 'helpers' / 'models.py'}:small_net"
    result = CliRunner().invoke(app, ["label", spec, "-l", "features.3", "--dataset", str(folder), "-u", "0-3",
                                      "--null-draws", "9", "--json", str(tmp_path / "labels.json")])
    assert result.exit_code == 0, result.output
    assert "concepts from wordnet ids" in result.output and "features.3 unit 0: " in result.output
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert [label["unit"] for label in labels] == [0, 1, 2, 3] and all(0 < label["p_value"] <= 1 for label in labels)
    checked = CliRunner().invoke(app, ["label", spec, "-l", "features.3", "--dataset", str(folder), "-u", "0",
                                       "--check", "terrier OR goldfish"])
    assert checked.exit_code == 0 and "terrier OR goldfish" in checked.output, checked.output
    bad = CliRunner().invoke(app, ["label", spec, "-l", "features.3", "--dataset", str(folder), "--check", "wolf"])
    assert bad.exit_code == 1 and "unknown concept 'wolf'" in bad.output and "Traceback" not in bad.output
