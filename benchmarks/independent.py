"""The trust scores' independent network: EfficientNet-Lite2 as it was run (the network as loaded, NCHW) against
``independent_network()`` (batch norms folded, channels-last), on the same images, side by side in one process:
seconds per image (median of 3), and how far the features and top-1 classes move (float rounding only).

    .venv/bin/python benchmarks/independent.py    # about a minute; prints, rewrites its section of RESULTS.md
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import filterscope as fs
from _results import machine, markdown_table, write_section  # benchmarks/_results.py
from filterscope.metrics import to_input_size
from filterscope.runtime import configure_threads
from filterscope.trust import independent_network
from filterscope.zoo.model import frozen

IMAGES = 64
REPEATS = 3
PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"


def photos(count: int) -> torch.Tensor:
    """``count`` of the diverse photos at 260 px (random pixels where the folder is absent: timing only)."""
    paths = sorted(PHOTOS.glob("*.JPEG"))[::800 // count][:count]  # spread over the classes
    if not paths:
        return torch.rand(count, 3, 260, 260, generator=torch.Generator().manual_seed(0))
    pictures = [np.asarray(Image.open(p).convert("RGB").resize((260, 260))) for p in paths]
    return torch.stack([torch.from_numpy(p.copy()).permute(2, 0, 1).float() / 255 for p in pictures])


def plain_embed(model: fs.LoadedModel, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedding as it was: the loaded network, NCHW, batches of 16."""
    head = [m for m in model.module.modules() if isinstance(m, torch.nn.Linear)][-1]
    seen: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _, inputs, __: seen.append(inputs[0].detach()))
    features, classes = [], []
    try:
        with frozen(model.module), torch.no_grad():
            for start in range(0, len(images), 16):
                logits = model.module(model.preprocessing.normalize(to_input_size(model, images[start:start + 16])))
                features.append(seen.pop().flatten(1))
                classes.append(logits.argmax(dim=1))
    finally:
        handle.remove()
    return torch.cat(features), torch.cat(classes)


def timed(function, images: torch.Tensor) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
    function(images[:16])  # warm-up
    seconds, out = [], None
    for _ in range(REPEATS):
        started = time.perf_counter()
        out = function(images)
        seconds.append(time.perf_counter() - started)
    assert out is not None
    return statistics.median(seconds) / len(images), out


def main() -> None:
    configure_threads()
    images = photos(IMAGES)
    plain_model = fs.load_model("efficientnet_lite2")
    fast = independent_network()
    plain_s, (plain_f, plain_c) = timed(lambda x: plain_embed(plain_model, x), images)
    fast_s, (fast_f, fast_c) = timed(fast.embed, images)
    drift = float(((fast_f - plain_f).norm(dim=1) / plain_f.norm(dim=1)).max())
    agree = float((fast_c == plain_c).float().mean())
    rows = [f"| as loaded, NCHW | {plain_s * 1000:.1f} | 1.00× | | |",
            f"| folded, channels-last (`independent_network()`) | {fast_s * 1000:.1f} | {plain_s / fast_s:.2f}× | "
            f"{drift:.1e} | {agree:.3f} |"]
    table = "\n".join([f"Machine: {machine()}. {len(images)} images at 260 px "
                       f"({'the diverse photos' if PHOTOS.exists() else 'random pixels'}), median of {REPEATS}.",
                       "", *markdown_table(["EfficientNet-Lite2", "ms per image", "speed", "largest feature change "
                                            "(relative)", "top-1 agreement"], rows)])
    print(table)
    write_section("independent", table, heading="The trust scores' independent network (benchmarks/independent.py)",
                  intro="Lite2's embedding as the trust stage used to run it and as `independent_network()` runs "
                        "it now, side by side. Reproduce: `.venv/bin/python benchmarks/independent.py` (about a "
                        "minute).")


if __name__ == "__main__":
    sys.exit(main())
