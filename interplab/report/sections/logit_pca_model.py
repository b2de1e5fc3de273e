"""The model report's logit-PCA section (:mod:`interplab.analyses.observational.logit_pca`) as HTML."""

from __future__ import annotations

from typing import TYPE_CHECKING

from interplab.report.html import Html, figure, text

if TYPE_CHECKING:
    from interplab.analyses.observational.logit_pca import LogitPCAResult

__all__ = ["logit_pca_parts"]


def logit_pca_parts(res: LogitPCAResult) -> list[Html]:
    """The trajectory of the logit lens's log-probabilities through the layers on common principal components,
    with the headline's scalar numbers."""
    h = res.headline()
    return [
        text(
            "PCA of the logit lens's log-probabilities on fixed random tokens, layer by layer: sharp turns of "
            "the trajectory mark layers where the prediction changes character. Data: logit_pca.json\n"
            + ", ".join(f"{k}: {v}" for k, v in h.items() if isinstance(v, (int, float, str)))
        ),
        figure(res.plot()),
    ]
