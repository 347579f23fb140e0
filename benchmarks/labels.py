"""Labels with evidence on the embedded networks (issue "Labels"), over the 800 diverse photos of
``../shared/data/imagenet-sample`` (one per ImageNet class; the WordNet id in each file name is its concept).

- Known units: each class logit of Lite0 and Lite1 whose class has a photo in the sample; the top formula should
  name the class or a WordNet ancestor within two levels (concepts of a single image are searched here, as the
  protocol needs; their p-values mean nothing, so none are reported).
- A whole layer: every unit of Lite0's ``_blocks.15`` labelled with the default settings (999 null draws), the time
  and how many are significant.

    .venv/bin/python benchmarks/labels.py            # about 12 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import time

import torch

import filterscope as fs
from _results import PHOTOS, machine, markdown_table, write_section  # benchmarks/_results.py
from filterscope.labels import image_concepts, label_units, parse
from filterscope.labels.formula import And, Concept, Formula, Or
from filterscope.labels.label import file_maxima
from filterscope.runtime import configure_threads
from filterscope.trust.describe import hierarchy


def activations(model: fs.LoadedModel, layer: str, files: list) -> torch.Tensor:
    return file_maxima(model, fs.layers.resolve_layer(model, layer), files)


def leaves(formula: Formula) -> list[Concept]:
    """The concepts a formula names without NOT before them."""
    if isinstance(formula, Concept):
        return [formula]
    if isinstance(formula, And | Or):
        return leaves(formula.left) + leaves(formula.right)
    return []


def known_units(name: str, files: list, concepts) -> str:
    model = fs.load_model(name)
    started = time.perf_counter()
    values = activations(model, "_fc", files)
    classes, _ = hierarchy()
    present = set(concepts.wnids)
    units = [c for c, node in enumerate(classes) if node.wnid in present]
    labels = label_units(values, concepts, units, min_images=1, null_draws=1)
    right = 0
    for label, unit in zip(labels, units):
        allowed = {concepts.wnids.index(w) for w in concepts.ancestors(classes[unit].wnid, 2) if w in concepts.wnids}
        named = {f.index for f in leaves(parse(label.formula, concepts.names))}
        right += bool(allowed & named)
    seconds = time.perf_counter() - started
    print(f"  {name}: {right} of {len(units)} classes named (or an ancestor within two levels), {seconds:.0f} s",
          flush=True)
    return f"| {name} `_fc` (class logits) | {len(units)} | {right} ({right / len(units):.1%}) | {seconds:.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    configure_threads()
    print(machine(), flush=True)
    files = sorted(PHOTOS.glob("*.JPEG"))
    concepts = image_concepts(files)
    rows = [known_units(name, files, concepts) for name in ("efficientnet_lite0", "efficientnet_lite1")]
    lite0 = fs.load_model("efficientnet_lite0")
    started = time.perf_counter()
    values = activations(lite0, "_blocks.15", files)
    passed = time.perf_counter()
    labels = label_units(values, concepts)
    done = time.perf_counter()
    significant = sum(label.significant for label in labels)
    shown = sorted(labels, key=lambda label: -label.score)[:5]
    print(f"  _blocks.15: {len(labels)} units, activations {passed - started:.0f} s, labels {done - passed:.0f} s, "
          f"{significant} significant", flush=True)
    for label in shown:
        print(f"    unit {label.unit}: {label.formula} ({label.score:.2f}, q {label.q_value:.3f})", flush=True)
    text = [f"{machine()}; {len(files)} photos of `imagenet-sample`, {len(concepts.names)} WordNet concepts (each "
            "photo's class and its ancestors).", "",
            *markdown_table(["units", "classes with a photo", "named (or an ancestor within two levels)", "seconds"],
                            rows), "",
            f"Lite0 `_blocks.15`, all {len(labels)} units (AUPRC above chance, length 3, beam 5, concepts of 3 images "
            f"or more, 999 null draws): labels in {done - passed:.0f} s after the activations ({passed - started:.0f}"
            f" s); {significant} significant at q <= 0.05. The five best:", "",
            *markdown_table(["unit", "formula", "AUPRC above chance", "q"],
                            [f"| {x.unit} | {x.formula} | {x.score:.2f} | {x.q_value:.3f} |" for x in shown])]
    if not args.no_write:
        write_section("labels", "\n".join(text), heading="Labels with evidence (`benchmarks/labels.py`)",
                      intro="`benchmarks/labels.py` (about 12 minutes on 2 cores): the class logits of Lite0 and "
                            "Lite1 as known units, and a whole layer of Lite0.")


if __name__ == "__main__":
    main()
