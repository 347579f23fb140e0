"""Speed of the image-driven analysis on the embedded model.

Times, in one run: the top-k ranking of one image; `top` over a folder of 32 photos, the plain
way (decode an image, run it, decode the next; NCHW) against filterscope's (decoded in a background
thread while the network runs, batches of 4, channels-last); the occlusion table over 8 regions; and
the occlusion sensitivity maps of issue 3's target (224 px image, 32 px patch, stride 8, deep layer
`_blocks.15` of EfficientNet-Lite0, 3 filters: 625 occluded copies) at several batch sizes and in
both memory formats. Prints a table and rewrites its section of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/analysis_speed.py
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from skimage import data

import filterscope as fs
from _results import write_section  # benchmarks/_results.py
from filterscope.analysis import (
    Box,
    layer_means,
    occlusion_study,
    prepare_image,
    rank_filters,
    sensitivity_maps,
)
from filterscope.demo import DEMO_PLAN
from filterscope.runtime import Runtime, configure_threads

NCHW = Runtime(channels_last=False)


def photo_folder(folder: Path, count: int = 32) -> list[Path]:
    """``count`` camera-sized photos (1600 px long side; crops and flips of scikit-image's photos,
    upscaled), alternately JPEG and PNG: PNGs cannot be decoded at reduced size, JPEGs can (draft mode)."""
    photos = [Image.fromarray(getattr(data, name)()) for name in ("chelsea", "coffee", "rocket", "astronaut")]
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        box = (i % 5 * w // 20, i % 3 * h // 20, w - i % 4 * w // 20, h - i % 2 * h // 20)
        image = photo.crop(box).transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else photo.crop(box)
        scale = 1600 / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        paths.append(folder / f"{i:02d}.{'jpg' if i % 2 == 0 else 'png'}")
        image.save(paths[-1], **({"quality": 92} if i % 2 == 0 else {}))
    return paths


def plain_top(model, paths, layer):
    """The plain way: decode, run one image, decode the next."""
    return [layer_means(model, layer, prepare_image(model, p).pixels[None], batch_size=1, runtime=NCHW)[0]
            for p in paths]


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    configure_threads()
    model = fs.load_model("efficientnet_lite0")
    cat = Image.fromarray(data.chelsea())
    layer = "_blocks.15"
    item = prepare_image(model, cat)
    rows = []
    seconds, ranking = timed(lambda: rank_filters(model, [cat], layer, k=10))
    rows.append(("top 10 of one image", "1 forward", seconds))
    with tempfile.TemporaryDirectory() as tmp:
        paths = photo_folder(Path(tmp))
        seconds, _ = timed(lambda: plain_top(model, paths, layer))
        rows.append(("top over 32 photos (1600 px JPEG/PNG), plain: decode then forward, one by one, NCHW", "32 forwards", seconds))
        for batch in (1, 4, 8):
            seconds, _ = timed(lambda b=batch: rank_filters(model, paths, layer, batch_size=b))
            rows.append((f"top over 32 photos (1600 px JPEG/PNG), filterscope: background decoding, batch {batch}", "32 forwards",
                         seconds))
    variants = {name: [Box(*b) for b in boxes] for name, boxes in DEMO_PLAN.regions}
    seconds, _ = timed(lambda: occlusion_study(model, item, layer, variants, k=10))
    rows.append(("occlusion table, 8 regions", "9 forwards", seconds))
    for batch in (1, 4, 16, 64):
        for runtime, layout in ((NCHW, "NCHW"), (Runtime(), "channels-last")):
            seconds, _ = timed(lambda b=batch, r=runtime: sensitivity_maps(
                model, item, layer, ranking.top[:3], patch=32, stride=8, batch_size=b, runtime=r))
            rows.append((f"sensitivity maps, batch {batch}, {layout}", "625 forwards", seconds))
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
