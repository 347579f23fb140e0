"""Concepts of a layer (issue "Concepts"): a TopK dictionary of Lite0 ``_blocks.15`` (8 x 320 = 2,560 concepts,
k = 32) trained on 640 of the 800 photos of ``../shared/data/imagenet-sample``, their mirror images and 4 random
views of each (every position), measured on the 160 held out, next to the raw channels and a PCA at the same
sparsity; a second seed for stability. Prints the time of collection and training, FVE (held out and on the
training vectors), L0, dead and dense concepts, the spliced-in top-1 agreement and KL, and the two seeds' matched
cosine.

    .venv/bin/python benchmarks/concepts.py            # about 8 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import time

import torch

import filterscope as fs
from _results import machine, markdown_table, sample_photos, write_section  # benchmarks/_results.py
from filterscope.analysis.activations import checked_layer
from filterscope.concepts import layer_grids
from filterscope.layers import resolve_layer
from filterscope.runtime import configure_threads
from filterscope.trust import TrustData, independent_network
from filterscope.trust.afc import machine_afc


def monosemanticity(model: fs.LoadedModel, layer: str, found: fs.ConceptDictionary, photos: torch.Tensor,
                    concepts: int) -> tuple[list[str], str]:
    """The exemplar 2-AFC (matched judge, 200 tasks) of the ``concepts`` most used concepts and of the unit each
    writes to most (its largest positive decoder weight), over all the photos: table rows and a summary line."""
    ref = resolve_layer(model, layer)
    grids = layer_grids(model, ref, photos)
    units = grids.flatten(2).amax(2)
    peaks = found.grid_codes(grids).flatten(2).amax(2)
    data = TrustData(model, ref, units, lambda idx: photos[list(idx)], independent_network(explained=model.name))
    _, features = data.judged()
    rows, wins, pairs = [], 0, []
    for c in found.by_usage()[:concepts]:
        unit = int(found.atoms[c].argmax())
        concept_score = machine_afc(features, peaks[:, c], "exemplars", seed=c).score
        unit_score = machine_afc(features, units[:, unit], "exemplars", seed=c).score
        wins += concept_score > unit_score
        pairs.append((concept_score, unit_score))
    for c, (a, b) in list(zip(found.by_usage(), pairs))[:10]:
        rows.append(f"| {c} | {found.usage[c]:.1%} | {a:.3f} | {int(found.atoms[c].argmax())} | {b:.3f} |")
    mean_c = sum(a for a, _ in pairs) / len(pairs)
    mean_u = sum(b for _, b in pairs) / len(pairs)
    line = (f"exemplar 2-AFC, matched judge: concept above its unit on {wins} of {len(pairs)} pairs "
            f"({wins / len(pairs):.0%}); mean {mean_c:.3f} (concepts) vs {mean_u:.3f} (units)")
    return rows, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="_blocks.15")
    parser.add_argument("--expansion", type=int, default=8, help="concepts per channel")
    parser.add_argument("-k", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--kind", default="topk")
    parser.add_argument("--photos", type=int, default=None, help="the first N photos (default all 800)")
    parser.add_argument("--no-stability", action="store_true")
    parser.add_argument("--pairs", type=int, default=100, help="most used concepts compared with their units")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    configure_threads()
    print(machine(), flush=True)
    lite0 = fs.load_model("efficientnet_lite0")
    photos = sample_photos(lite0, args.photos)
    stamps: dict[str, float] = {}
    started = time.perf_counter()

    def progress(what: str, done: int, total: int) -> None:
        if done == total:
            stamps.setdefault(what, time.perf_counter() - started)

    _, channels = checked_layer(lite0, args.layer)
    found = fs.train_dictionary(lite0, args.layer, photos, atoms=args.expansion * channels, k=args.k,
                                kind=args.kind, epochs=args.epochs, views=args.views, seed=0, stability_seed=None if args.no_stability else 1,
                                progress=progress)
    total = time.perf_counter() - started
    rows = []
    for q in found.quality:
        top1 = f"{q.top1:.1%}" if q.top1 is not None else "-"
        kl = f"{q.kl:.4f}" if q.kl is not None else "-"
        rows.append(f"| {q.name} | {q.atoms} | {q.fve:.3f} | {q.l0:.1f} | {q.dead:.1%} | {q.dense:.1%} | {top1} | {kl} |")
    for row in rows:
        print(row, flush=True)
    collect, train = stamps.get("vectors", 0.0), stamps.get("training", 0.0) - stamps.get("vectors", 0.0)
    stable = (f"two seeds: matched cosine {found.stability.mean_cosine:.3f}, {found.stability.above_09:.0%} of "
              "concepts above 0.9" if found.stability else "stability not measured")
    timing = (f"{found.vectors:,} training vectors ({len(photos) - len(found.held_out)} photos, their mirror "
              f"images and {args.views} random views of each); collection {collect:.0f} s, training {train:.0f} s (collection + training "
              f"{found.seconds / 60:.1f} min); {stable}; whole run {total / 60:.1f} min")
    print(timing, flush=True)
    pair_rows, pair_line = monosemanticity(lite0, args.layer, found, photos, args.pairs)
    for row in pair_rows:
        print(row, flush=True)
    print(pair_line, flush=True)
    text = [f"{machine()}; Lite0 `{args.layer}`, {args.kind}, {found.settings.atoms} concepts, k = {found.settings.k}, "
            f"{args.views} random views per photo, {found.settings.epochs} epochs (at least {found.settings.min_steps} "
            f"steps); {len(found.held_out)} held-out photos.", "",
            *markdown_table(["dictionary", "atoms", "FVE", "L0", "dead", "dense", "spliced-in top-1", "KL (nats)"],
                            rows), "", f"FVE on the training vectors: {found.train_fve:.3f}. " + timing, "",
            f"Monosemanticity ({args.pairs} most used concepts, each against the unit it writes to most; the first "
            "10 shown): " + pair_line, "",
            *markdown_table(["concept", "usage", "exemplar 2-AFC", "unit", "unit's exemplar 2-AFC"], pair_rows)]
    if not args.no_write:
        write_section("concepts", "\n".join(text), heading="Concepts: a sparse dictionary of a layer "
                      "(`benchmarks/concepts.py`)",
                      intro="`benchmarks/concepts.py` (about 8 minutes on 2 cores; targets: collection and training "
                            "at most 15 minutes; FVE >= 0.8 at L0 <= 32, at most 5 % dead, spliced-in top-1 >= 90 %).")


if __name__ == "__main__":
    main()
