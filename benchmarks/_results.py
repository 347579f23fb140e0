"""Shared by the benchmark scripts: rewrite one marked section of benchmarks/RESULTS.md."""

from __future__ import annotations

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
