"""The audit's figure: each signal's ROC curve against each manipulation (scikit-learn's ROC, matplotlib's axes)."""

from __future__ import annotations

from matplotlib.figure import Figure

from .audit import SIGNALS, AuditReport

__all__ = ["audit_figure"]


def audit_figure(report: AuditReport) -> Figure:
    """One panel per manipulation: the ROC curve of each signal (manipulated against untouched units), its AUROC in
    the legend, and each thresholded signal's operating point (false alarms, detected) as a dot."""
    from sklearn.metrics import roc_curve

    kinds = report.kinds()
    figure = Figure(figsize=(4.2 * max(len(kinds), 1), 4.2), layout="constrained")
    axes = figure.subplots(1, max(len(kinds), 1), squeeze=False)[0]
    clean = [u for u in report.units if u.kind == "untouched"]
    scores = {(s.signal, s.kind): s for s in report.scores()}
    for ax, kind in zip(axes, kinds):
        bad = [u for u in report.units if u.kind == kind]
        for signal in SIGNALS:
            fpr, tpr, _ = roc_curve([1] * len(bad) + [0] * len(clean), [u.suspicion[signal] for u in bad + clean])
            score = scores[(signal, kind)]
            line, = ax.plot(fpr, tpr, label=f"{signal} (AUROC {score.auroc:.2f})", drawstyle="steps-post")
            if score.detected is not None and score.false_alarm is not None:
                ax.plot([score.false_alarm], [score.detected], "o", color=line.get_color())
        ax.plot([0, 1], [0, 1], ":", color="gray")
        ax.set(title=f"{kind} units ({len(bad)}) vs untouched ({len(clean)})", xlabel="false-alarm rate",
               ylabel="detected", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.legend(loc="lower right", fontsize=7)
    figure.suptitle(f"Red-team audit: {report.model} {report.layer} ({report.recipe} renders)", fontsize=10)
    return figure
