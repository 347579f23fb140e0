"""Shared by the benchmark scripts: rewrite one marked section of benchmarks/RESULTS.md, and the diverse photos."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from filterscope import LoadedModel
from filterscope.analysis.inputs import prepare_image

RESULTS = Path(__file__).with_name("RESULTS.md")
PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
"""800 ImageNet photos, one per class (``../shared/data/imagenet-sample``): every benchmark of scores."""


def sample_photos(model: LoadedModel, count: int | None = None) -> torch.Tensor:
    """The first ``count`` photos of :data:`PHOTOS` (all by default) in ``model``'s view, ``(N, C, H, W)`` in [0, 1];
    exits naming the folder when it holds none."""
    paths = sorted(PHOTOS.glob("*.JPEG"))[:count]
    if not paths:
        raise SystemExit(f"no photos in {PHOTOS}")
    return torch.stack([prepare_image(model, p).pixels for p in paths])


def write_section(key: str, table: str, *, heading: str, intro: str) -> None:
    """Put ``table`` between the ``<!-- key:begin -->``/``<!-- key:end -->`` markers, adding the section
    (``heading`` and ``intro``) at the end of the file the first time."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{begin}\n{table}\n{end}"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n{intro}\n\n{block}\n"
    RESULTS.write_text(text)


def machine() -> str:
    """The machine in words for a results section: CPU model and its bf16 support, CPUs, torch version."""
    import torch

    from filterscope.runtime import cpu_description

    return f"{cpu_description()}, {os.cpu_count()} CPUs, torch {torch.__version__}"


def markdown_table(columns: Sequence[str], rows: Sequence[str]) -> list[str]:
    """A Markdown table's lines: the header of ``columns``, its rule, then ``rows`` (already formatted)."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *rows]
