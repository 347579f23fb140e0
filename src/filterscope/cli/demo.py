"""The ``demo`` command: the paper's figures on the embedded model (what ``make demo`` runs)."""

import time
from pathlib import Path

import typer

from ..demo import run_demo
from ..files import check_output
from ..runtime.core import Runtime
from .app import app, guarded
from .options import DeviceOption, ModelOption, OutOption, QuietOption, SeedOption, load, runtime_options
from .progress import RenderProgress


@app.command("demo")
@guarded
@runtime_options
def demo_command(
    out: OutOption = Path("out/demo"),
    model: ModelOption = "efficientnet_lite0",
    seed: SeedOption = 0,
    quiet: QuietOption = False,
    device: DeviceOption = "auto",
    *,
    runtime: Runtime,
) -> None:
    """Reproduce the paper's figures (1-6, Table 1) on the embedded model and a cat photo, and build a small atlas (~5 min on 2 cores)."""
    check_output(out, folder=True)
    loaded = load(model, None, seed, device, quiet)
    bars: list[RenderProgress] = []

    def progress(label: str, total: int) -> RenderProgress:
        if bars:
            bars.pop().close()
        bars.append(RenderProgress(label, total, quiet))
        return bars[-1]

    started = time.perf_counter()
    try:
        outputs = run_demo(loaded, out, seed=seed, progress=progress, runtime=runtime)
    finally:
        for bar in bars:
            bar.close()
    typer.echo("Table 1 on chelsea (occluded regions vs the top 10 filters):")
    typer.echo(outputs.table, nl=False)
    for path in outputs.figures:
        typer.echo(f"wrote {path}")
    typer.echo(f"demo figures are in {out}/ (single images with metadata in {out}/filters/ and {out}/figure1/), "
               f"{time.perf_counter() - started:.0f} s")
    typer.echo(f"browse the demo's atlas in a web browser: filterscope serve {out / 'atlas'}")
