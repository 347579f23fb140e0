"""Trust for a whole layer without renders (issue "Trust II", Performance: a 320-unit layer over 800 photos in at
most 5 minutes on 2 cores): ``fs.trust_units`` for every unit of Lite0 ``_blocks.15`` over the 800 photos of
``../shared/data/imagenet-sample``, the matched judge, the class effect (the layer is near the classifier).
Prints the time of the shared work (maxima, the judge's features of every photo) and per unit, and the total.

    .venv/bin/python benchmarks/trust_layer.py       # about 6 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import time

import filterscope as fs
from _results import machine, markdown_table, sample_photos, write_section  # benchmarks/_results.py
from filterscope.runtime import configure_threads
from filterscope.trust import independent_network, trust_units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=320, help="units of _blocks.15 (default all 320)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    configure_threads()
    print(machine(), flush=True)
    lite0 = fs.load_model("efficientnet_lite0")
    photos = sample_photos(lite0)
    independent = independent_network(explained=lite0.name)
    stamps: list[float] = []
    started = time.perf_counter()
    trust_units(lite0, "_blocks.15", list(range(args.units)), photos, independent,
                progress=lambda done, total: stamps.append(time.perf_counter() - started))
    total = time.perf_counter() - started
    first, rest = stamps[0], (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)
    row = f"| `_blocks.15` | {args.units} | {len(photos)} | {first:.0f} | {rest:.2f} | {total / 60:.1f} |"
    print(row, flush=True)
    text = [f"{machine()}; `fs.trust_units` without renders, judge `matched`, class effects on.", "",
            *markdown_table(["layer", "units", "photos", "first unit s (shared work)", "s per further unit",
                             "total minutes"], [row])]
    if not args.no_write:
        write_section("trust-layer", "\n".join(text), heading="Trust II: a whole layer's trust (`benchmarks/trust_layer.py`)",
                      intro="`benchmarks/trust_layer.py` (about 6 minutes on 2 cores): trust records of every unit of a "
                            "layer over the 800 photos, without renders (target: at most 5 minutes).")


if __name__ == "__main__":
    main()
