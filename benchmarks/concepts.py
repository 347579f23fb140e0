"""Concepts of a layer (issue "Concepts"): a BatchTopK dictionary of Lite0 ``_blocks.15`` (8 x 320 = 2,560
concepts, k = 32) trained on 640 of the 800 photos of ``../shared/data/imagenet-sample`` and their mirror images
(every position), measured on the 160 held out, next to the raw channels and a PCA at the same sparsity; a second
seed for stability. Prints the time of collection and training, FVE, L0, dead and dense concepts, the spliced-in
top-1 agreement and KL, and the two seeds' matched cosine.

    .venv/bin/python benchmarks/concepts.py            # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import time

import filterscope as fs
from _results import machine, markdown_table, sample_photos, write_section  # benchmarks/_results.py
from filterscope.analysis.activations import checked_layer
from filterscope.runtime import configure_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="_blocks.15")
    parser.add_argument("--expansion", type=int, default=8, help="concepts per channel")
    parser.add_argument("-k", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--photos", type=int, default=None, help="the first N photos (default all 800)")
    parser.add_argument("--no-stability", action="store_true")
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
                                epochs=args.epochs, seed=0, stability_seed=None if args.no_stability else 1,
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
    timing = (f"{found.vectors:,} training vectors ({len(photos) - len(found.held_out)} photos and their mirror "
              f"images); collection {collect:.0f} s, training {train:.0f} s (collection + training "
              f"{found.seconds / 60:.1f} min); {stable}; whole run {total / 60:.1f} min")
    print(timing, flush=True)
    text = [f"{machine()}; Lite0 `{args.layer}`, BatchTopK, {found.settings.atoms} concepts, k = {found.settings.k}, "
            f"{found.settings.epochs} epochs; {len(found.held_out)} held-out photos.", "",
            *markdown_table(["dictionary", "atoms", "FVE", "L0", "dead", "dense", "spliced-in top-1", "KL (nats)"],
                            rows), "", timing]
    if not args.no_write:
        write_section("concepts", "\n".join(text), heading="Concepts: a sparse dictionary of a layer "
                      "(`benchmarks/concepts.py`)",
                      intro="`benchmarks/concepts.py` (about 10 minutes on 2 cores; targets: collection and training "
                            "at most 15 minutes; FVE >= 0.8 at L0 <= 32, at most 5 % dead, spliced-in top-1 >= 90 %).")


if __name__ == "__main__":
    main()
