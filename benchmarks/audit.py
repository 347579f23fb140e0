"""The red-team audit on the embedded model (issue "Trust II"): how well each trust signal catches fooling and
silent units of Lite0, on the 800 diverse photos of ``../shared/data/imagenet-sample``.

For each layer: 4 fooling units (their pictures show another unit, after Geirhos et al. 2024), 4 silent units and 12
untouched units of the same network, 3 ``filterscope`` renders of each sign per unit; half the photos fit the
manipulations, half are the trust scores' dataset. Prints the table and what moved on natural photos, writes the
figure to ``benchmarks/audit-<layer>.png``, the report (every unit's trust record) to ``audit-<layer>.json`` and
the numbers to ``benchmarks/RESULTS.md``.

    .venv/bin/python benchmarks/audit.py            # about 20 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import filterscope as fs
from _results import machine, markdown_table, sample_photos, write_section  # benchmarks/_results.py
from filterscope.audit import audit_figure, audit_layer
from filterscope.runtime import configure_threads
from filterscope.trust import independent_network

LAYERS = {"_blocks.8": "middle", "_blocks.15": "deep"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800, help="photos of the sample to use (default all 800)")
    parser.add_argument("--layers", nargs="*", default=list(LAYERS), help="layers to audit")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    configure_threads()
    print(machine(), flush=True)
    lite0 = fs.load_model("efficientnet_lite0")
    photos = sample_photos(lite0, args.images)
    independent = independent_network(explained=lite0.name)
    rows, moved = [], []
    for layer in args.layers:
        started = time.perf_counter()

        def say(message: str, started: float = started) -> None:
            print(f"  {time.perf_counter() - started:5.0f} s {message}", flush=True)

        report = audit_layer(lite0, layer, photos, independent, progress=say)
        audit_figure(report).savefig(Path(__file__).parent / f"audit-{layer}.png", dpi=90)
        if not args.no_write:  # every unit's record: other thresholds can be read from it without a rerun
            (Path(__file__).parent / f"audit-{layer}.json").write_text(report.to_json())
        for s in report.scores():
            rows.append(f"| `{layer}` ({LAYERS.get(layer, '')}) | {s.kind} | {s.signal} | {s.auroc:.2f} | "
                        + (f"{s.detected:.0%} | {s.false_alarm:.0%} |" if s.detected is not None else "- | - |"))
            print(rows[-1], flush=True)
        d = report.drift
        moved.append(f"| `{layer}` | {report.seconds / 60:.1f} | {d.top1:.1%} | {d.fooling:.2%} | {d.gate_open:.1%} | "
                     f"{d.error:.2%} | {min(d.overlap.values()):.0%} |")
        print(moved[-1], flush=True)
    text = [f"{machine()}; {len(photos)} photos of `imagenet-sample` (half fit, half scored), 4 fooling, 4 silent and "
            "12 untouched units per layer, 3 `filterscope` renders of each sign per unit, judge `matched`.", "",
            *markdown_table(["layer", "manipulation", "signal", "AUROC", "detected", "false alarms"], rows), "",
            "On the held-out natural photos:", "",
            *markdown_table(["layer", "audit minutes", "top-1 unchanged", "fooling units' largest change",
                             "gate open on", "untouched units' largest change", "top-10 exemplars kept (worst)"],
                            moved)]
    if not args.no_write:
        write_section("audit", "\n".join(text), heading="Trust II: the red-team audit (`benchmarks/audit.py`)",
                      intro="`benchmarks/audit.py` (about 20 minutes on 2 cores): `filterscope audit` on two layers of "
                            "Lite0; the ROC curves are `benchmarks/audit-<layer>.png`.")


if __name__ == "__main__":
    main()
