"""What an image is made of, measured (issue "What an image is made of", section Performance):

1. **Semantic dictionary and spatial attribution** for one image (scikit-image's cat) at ``_blocks.10`` and
   ``_blocks.15`` of EfficientNet-Lite0: one forward pass, and one forward and backward pass; median of 5.
   Target: under 1 s together (with an atlas, whose renders show the units).
2. **Neuron groups**: NMF of the same activations into 6 groups (median of 3), and ``filterscope explain`` with
   every picture rendered (24 dictionary units and 6 group directions with the ``filterscope`` recipe, no
   atlas) in a fresh process. Target: at most 2 minutes.
3. **Feature inversion** of the cat at ``_blocks.8``: the cosine reached with the seeded recipe.
4. **The microscope's image page**: ``POST /api/m/efficientnet_lite0/_blocks.10/explain`` with the cat (JPEG),
   against a small atlas of that layer, through the ASGI app in this process; median of 5. Target: under 2 s.

    .venv/bin/python benchmarks/explain.py          # about 3 minutes; prints, rewrites its section of RESULTS.md
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from skimage import data

import filterscope as fs
from _results import machine, markdown_table, write_section  # benchmarks/_results.py
from filterscope.runtime import configure_threads


def median_seconds(function, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def page_row(model: fs.LoadedModel, cat: Image.Image) -> str:
    import io

    from fastapi.testclient import TestClient

    from filterscope.demo import write_reference_set
    from filterscope.microscope import create_app
    from filterscope.microscope.explain import Explainer

    with tempfile.TemporaryDirectory() as tmp:
        data = write_reference_set(Path(tmp) / "data", 8)
        fs.build_atlas(Path(tmp) / "atlas", model, ["_blocks.10"], recipes=[], dataset=data, exemplars=3)
        client = TestClient(create_app(Path(tmp) / "atlas", explainer=Explainer(model)))
        buffer = io.BytesIO()
        cat.save(buffer, "JPEG", quality=90)
        body = buffer.getvalue()

        def ask() -> None:
            response = client.post("/api/m/efficientnet_lite0/_blocks.10/explain", content=body)
            response.raise_for_status()

        seconds = median_seconds(ask, 5)
    return f"| image page: the explain request for the cat at `_blocks.10` (dictionary, 6 groups, attribution) | " \
           f"{seconds:.2f} s | < 2 s |"


def main() -> None:
    configure_threads()
    print(machine(), flush=True)
    model = fs.load_model("efficientnet_lite0")
    cat = Image.fromarray(data.chelsea())
    rows = []
    for layer in ("_blocks.10", "_blocks.15"):
        dictionary = median_seconds(lambda layer=layer: fs.semantic_dictionary(model, cat, layer), 5)
        attribution = median_seconds(lambda layer=layer: fs.spatial_attribution(model, cat, layer), 5)
        groups = median_seconds(lambda layer=layer: fs.neuron_groups(model, cat, layer, n=6), 3)
        rows.append(f"| `{layer}`: dictionary + attribution | {dictionary:.2f} s + {attribution:.2f} s | < 1 s |")
        rows.append(f"| `{layer}`: neuron groups (NMF, 6) | {groups:.2f} s | – |")
        print(rows[-2], rows[-1], sep="\n", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cat.jpg"
        cat.save(path)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "filterscope", "explain", str(path), "-l", "_blocks.10", "--groups", "6",
                        "-q", "-o", str(Path(tmp) / "out")], check=True, capture_output=True)
        seconds = time.perf_counter() - start
    rows.append(f"| `filterscope explain` with every picture rendered (24 units + 6 groups, `_blocks.10`) | "
                f"{seconds:.0f} s | ≤ 120 s |")
    print(rows[-1], flush=True)
    inverted = fs.invert(model, cat, "_blocks.8")
    rows.append(f"| feature inversion of the cat at `_blocks.8` (seeded recipe, 256 steps): cosine | "
                f"{float(inverted.values[0]):.3f} ({inverted.seconds:.0f} s) | ≥ 0.9 |")
    print(rows[-1], flush=True)
    rows.append(page_row(model, cat))
    print(rows[-1], flush=True)
    table = "\n".join([f"Machine: {machine()}.", "", *markdown_table(["what", "measured", "target"], rows)])
    print(table)
    write_section("explain", table, heading="What an image is made of (benchmarks/explain.py)",
                  intro=__doc__.split("\n\n", 1)[1].split("\n\n    ")[0])


if __name__ == "__main__":
    main()
