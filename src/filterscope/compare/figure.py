"""A diff's figure: the CKA heat map with each layer's best partner, and each matched layer pair's correlations
against the null's threshold (matplotlib)."""

from __future__ import annotations

from matplotlib.figure import Figure

from .diff import ModelDiff

__all__ = ["diff_figure"]


def _short(name: str) -> str:
    return name.replace("_blocks.", "b")


def diff_figure(report: ModelDiff) -> Figure:
    """Left: CKA of every layer of A (rows) with every layer of B (columns), a dot on each row's best partner.
    Right: each matched pair's one-to-one correlations, best first, with the shuffled-image threshold."""
    figure = Figure(figsize=(11, 4.8), layout="constrained")
    heat, curves = figure.subplots(1, 2, width_ratios=(1.2, 1))
    image = heat.imshow(report.cka, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    figure.colorbar(image, ax=heat, label="linear CKA" + (" (debiased)" if report.debiased else ""))
    for i, row in enumerate(report.cka):
        j = max(range(len(row)), key=row.__getitem__)
        heat.plot([j], [i], "o", color="white", markersize=4)
    heat.set_yticks(range(len(report.layers_a)), [_short(n) for n in report.layers_a], fontsize=7)
    heat.set_xticks(range(len(report.layers_b)), [_short(n) for n in report.layers_b], fontsize=7, rotation=90)
    heat.set(ylabel=f"A: {report.model_a}", xlabel=f"B: {report.model_b}",
             title=f"layer similarity over {report.images} images (dot: best partner)")
    for match in report.matches:
        line, = curves.plot([m.correlation for m in match.matches],
                            label=f"{match.layer_a} ↔ {match.layer_b}: {match.share:.0%} matched, "
                                  f"{len(match.buddies)} buddies")
        curves.axhline(match.threshold, linestyle=":", color=line.get_color())
    curves.set(xlabel="matched pair (best first)", ylabel="correlation over images and positions",
               title="one-to-one unit matching (dotted: shuffled-image threshold)", ylim=(-0.05, 1.02))
    if report.matches:
        curves.legend(fontsize=7, loc="upper right")
    return figure
