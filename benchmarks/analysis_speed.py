"""Speed of the image-driven analysis on the embedded model.

Times, in one run: the top-k ranking of one image, the occlusion table over 8 regions, and the
occlusion sensitivity maps of the issue's target (224 px image, 32 px patch, stride 8, deep layer
`_blocks.15` of EfficientNet-Lite0, 3 filters: 625 occluded copies) at several batch sizes. Prints a
table and rewrites its section of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/analysis_speed.py
"""

from __future__ import annotations

import platform
import time

import torch
from PIL import Image
from skimage import data

import filterscope as fs
from _results import write_section  # benchmarks/_results.py
from filterscope.analysis import Box, occlusion_study, prepare_image, rank_filters, sensitivity_maps
from filterscope.demo import DEMO_PLAN


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    model = fs.load_model("efficientnet_lite0")
    cat = Image.fromarray(data.chelsea())
    layer = "_blocks.15"
    item = prepare_image(model, cat)
    rows = []
    seconds, ranking = timed(lambda: rank_filters(model, [cat], layer, k=10))
    rows.append(("top 10 of one image", "1 forward", seconds))
    variants = {name: [Box(*b) for b in boxes] for name, boxes in DEMO_PLAN.regions}
    seconds, _ = timed(lambda: occlusion_study(model, item, layer, variants, k=10))
    rows.append(("occlusion table, 8 regions", "9 forwards", seconds))
    for batch in (1, 4, 16, 64):
        seconds, maps = timed(lambda b=batch: sensitivity_maps(model, item, layer, ranking.top[:3], patch=32,
                                                               stride=8, batch_size=b))
        rows.append((f"sensitivity maps, batch {batch}", "625 forwards", seconds))
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    lines = [
        f"efficientnet_lite0 `{layer}`, chelsea at 224 px; {machine}. Target: sensitivity maps (32 px patch, "
        "stride 8) under 60 s.",
        "",
        "| task | work | seconds |",
        "|---|---|---|",
        *[f"| {task} | {work} | {s:.2f} |" for task, work, s in rows],
    ]
    table = "\n".join(lines)
    print(table)
    write_section('analysis-speed', table, heading='Image-driven analysis',
                  intro='`benchmarks/analysis_speed.py`: reproduce with `.venv/bin/python benchmarks/analysis_speed.py`.')


if __name__ == "__main__":
    main()
