"""Shared by the benchmark scripts: rewrite one marked section of benchmarks/RESULTS.md."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


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
