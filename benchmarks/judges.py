"""Which judge to believe, and how renders fare in a fair task (issue "Trust II": a fair task, a judge that earns
its place). Measured on the diverse photos of ``../shared/data/imagenet-sample`` (800 ImageNet photos, one per
class), never on crops of one photo:

1. **Judges.** For units of three depths of EfficientNet-Lite0 (``_blocks.2`` early, ``_blocks.8`` middle,
   ``_blocks.15`` deep) and of the alive random Lite0 (the control network), the machine 2-AFC score of the
   unit's *exemplars* (9 top and 9 bottom references, Borowski et al.'s natural condition) and of *random*
   references (the control: chance is 0.5) under every registered judge (:mod:`filterscope.trust.judges`). Each
   unit's tasks have their own seed. Mean ± standard deviation over the units.
2. **Renders in the fair task** (``--renders``): for the trained network's units, 3 renders maximizing and 3
   minimizing each unit (3 seeds) with each named recipe, scored with both signs and with the maximizing renders
   only, beside the exemplars at the same k (3 top, 3 bottom), under the chosen judge; the ratio renders ÷
   exemplars (people in Borowski et al.: 82/92 = 0.89).

    .venv/bin/python benchmarks/judges.py --renders --render-units 4   # about 35 minutes on 2 cores; rewrites its RESULTS.md section
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import filterscope as fs
from _results import machine, markdown_table, sample_photos, write_section  # benchmarks/_results.py
from filterscope.runtime import Forward, configure_threads
from filterscope.trust import TrustData, independent_network, machine_afc
from filterscope.trust.judges import JUDGES

LAYERS = {"_blocks.2": "early", "_blocks.8": "middle", "_blocks.15": "deep"}
RECIPES = ("paper", "lucid", "filterscope")


def maxima(model: fs.LoadedModel, layers: list[str], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each image's spatial maximum of every unit of ``layers``."""
    refs = [fs.layers.resolve_layer(model, name) for name in layers]
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    with torch.no_grad(), Forward(model, refs) as forward:
        for start in range(0, len(images), 32):
            acts = forward(model.preprocessing.normalize(images[start:start + 32]))
            for name, ref in zip(layers, refs):
                parts[name].append(acts[ref].flatten(2).amax(dim=2))
    return {name: torch.cat(p) for name, p in parts.items()}


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"


def judge_table(networks: dict[str, fs.LoadedModel], images: torch.Tensor, units: int,
                independent: fs.trust.Independent) -> tuple[list[str], dict[tuple[str, str, str], float]]:
    rows, means = [], {}
    for label, model in networks.items():
        values = maxima(model, list(LAYERS), images)
        for layer, depth in LAYERS.items():
            ref = fs.layers.resolve_layer(model, layer)
            chosen = torch.randperm(values[layer].shape[1], generator=torch.Generator().manual_seed(0))[:units].tolist()
            for name in JUDGES.names():
                started = time.perf_counter()
                data = TrustData(model, ref, values[layer], lambda idx: images[list(idx)], independent, judge=name)
                _, features = data.judged()
                seconds = time.perf_counter() - started
                exemplars = [machine_afc(features, values[layer][:, u], "exemplars", seed=u).score for u in chosen]
                randoms = [machine_afc(features, values[layer][:, u], "random", seed=u).score for u in chosen]
                means[(label, layer, name)] = statistics.mean(exemplars)
                rows.append(f"| {label} | `{layer}` ({depth}) | {name} | {spread(exemplars)} | {spread(randoms)} | "
                            f"{seconds:.0f} |")
                print(rows[-1], flush=True)
    return markdown_table(["network", "layer", "judge", "exemplars (k 9)", "random references",
                           "judge features s"], rows), means


def render_table(model: fs.LoadedModel, images: torch.Tensor, units: int, independent: fs.trust.Independent,
                 judge: str) -> list[str]:
    values = maxima(model, list(LAYERS), images)
    rows = []
    for layer, depth in LAYERS.items():
        ref = fs.layers.resolve_layer(model, layer)
        chosen = torch.randperm(values[layer].shape[1], generator=torch.Generator().manual_seed(1))[:units].tolist()
        data = TrustData(model, ref, values[layer], lambda idx: images[list(idx)], independent, judge=judge)
        standard, features = data.judged()
        exemplars = [machine_afc(features, values[layer][:, u], "exemplars", k=3, seed=u).score for u in chosen]
        for recipe in RECIPES:
            objectives = [fs.Channel(layer, u) for u in chosen] + [-fs.Channel(layer, u) for u in chosen]
            started = time.perf_counter()
            result = fs.render(model, objectives, recipe=fs.get_recipe(recipe), copies=3, seed=0)
            seconds = (time.perf_counter() - started) / len(result)
            embedded = standard(standard.judge.embed(result.images)).reshape(2, len(chosen), 3, -1)
            both, up = [], []
            for i, u in enumerate(chosen):
                both.append(machine_afc(features, values[layer][:, u], "renders", renders=embedded[0, i],
                                        negatives=embedded[1, i], seed=u).score)
                up.append(machine_afc(features, values[layer][:, u], "renders", renders=embedded[0, i], seed=u).score)
            ratio = statistics.mean(both) / statistics.mean(exemplars)
            rows.append(f"| `{layer}` ({depth}) | {recipe} | {spread(both)} | {spread(up)} | {spread(exemplars)} | "
                        f"{ratio:.2f} | {seconds:.1f} |")
            print(rows[-1], flush=True)
    return markdown_table(["layer", "recipe", "renders, both signs (3 + 3)", "renders, maximizing only (3)",
                           "exemplars (3 + 3)", "renders ÷ exemplars", "s per render"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800, help="photos of the sample to use (default all 800)")
    parser.add_argument("--units", type=int, default=12, help="units per layer for the judges")
    parser.add_argument("--renders", action="store_true", help="also the fair task with renders (slow)")
    parser.add_argument("--render-units", type=int, default=6, help="units per layer with renders")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    configure_threads()
    print(machine(), flush=True)
    lite0 = fs.load_model("efficientnet_lite0")
    images = sample_photos(lite0, args.images)
    independent = independent_network(explained=lite0.name)
    networks = {"Lite0": lite0, "Lite0 random (alive)": fs.load_model("efficientnet_lite0", "random")}
    table, _ = judge_table(networks, images, args.units, independent)
    text = [f"{machine()}; {len(images)} photos of `imagenet-sample`, {args.units} units per layer (seeded), "
            f"200 tasks per unit, pools of 30, independent network {independent.name}.", "", *table]
    if args.renders:
        text += ["", f"Renders in the fair task, judge `matched`, {args.render_units} units per layer of Lite0:", "",
                 *render_table(lite0, images, args.render_units, independent, "matched")]
    if not args.no_write:
        write_section("judges", "\n".join(text), heading="Trust II: judges and the fair task (`benchmarks/judges.py`)",
                      intro="`benchmarks/judges.py [--renders]`: the machine 2-AFC of exemplars and of random "
                            "references under each judge, on 800 diverse ImageNet photos; with `--renders`, renders of "
                            "both signs in the same task (see the script's docstring).")


if __name__ == "__main__":
    main()
