"""Report section of the logit PCA (:mod:`interplab.analyses.observational.logit_pca`): summary, trajectory figure
and the table of points.

>>> report.section("PCA of logits", *logit_pca_parts(res))
"""

from __future__ import annotations

from interplab.analyses.observational.logit_pca import LogitPCAResult
from interplab.report.html import Html, figure, table, text

__all__ = ["logit_pca_parts", "model_report_parts"]


def logit_pca_parts(res: LogitPCAResult) -> list[Html]:
    """Report parts of a logit PCA: a summary (explained variance, sharpest turns, longest step), the
    trajectory figure and the table of points.

    Args:
        res: the result of :func:`interplab.analyses.observational.logit_pca.logit_pca`.
    """

    h = res.headline()
    kinks = ", ".join(f"layer {kk['layer']} ({kk['angle']:.0f}°)" for kk in h["kinks"]) or "none"
    s = res.settings
    summary = (
        f"{s.get('n_seqs')} random sequences of {s.get('seq_len')} tokens (seed {s.get('seed')}); every layer's "
        f"logit-lens {s.get('space')} projected onto common principal components. Explained variance of "
        f"PC1–PC{len(h['explained_variance'])}: {', '.join(f'{100 * v:.1f}%' for v in h['explained_variance'])}. "
        f"Sharpest turns (angle between consecutive steps, full space): {kinks}. Longest step: into layer "
        f"{h['largest_step']['layer']} ({100 * (h['largest_step']['frac_of_path'] or 0):.0f}% of the path)."
    )
    if "training_kinks" in h:
        summary += (
            " Across checkpoints (last layer), sharpest turns at: "
            + ", ".join(f"{kk['checkpoint']} ({kk['angle']:.0f}°)" for kk in h["training_kinks"])
            + "."
        )
    return [text(summary), figure(res.plot()), table(res.to_frame("points"))]


def model_report_parts(res: LogitPCAResult) -> list[Html]:
    """The model report's shorter logit-PCA section: the trajectory of the logit lens's log-probabilities through
    the layers on common principal components, with the headline's scalar numbers."""
    h = res.headline()
    return [
        text(
            "PCA of the logit lens's log-probabilities on fixed random tokens, layer by layer: sharp turns of "
            "the trajectory mark layers where the prediction changes character. Data: logit_pca.json\n"
            + ", ".join(f"{k}: {v}" for k, v in h.items() if isinstance(v, (int, float, str)))
        ),
        figure(res.plot()),
    ]
