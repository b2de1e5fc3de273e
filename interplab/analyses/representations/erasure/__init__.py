"""Linear concept erasure as scikit-learn ``fit`` / ``transform`` estimators, and an honest evaluation harness.

Erasers (each removes a concept ``y`` — class labels — from representations ``X [n, d]``), one per module:

* :class:`MeanDifferenceEraser` (:mod:`.mean`) — orthogonal projection removing the span of the class-mean
  differences (the classic "mean-difference" / difference-in-means direction).
* :class:`LeaceEraser` (:mod:`.leace`) — LEACE, the least-squares closed form of Belrose et al. (2023),
  "LEACE: Perfect linear concept erasure in closed form" (NeurIPS 2023). Streaming (``partial_fit``)
  statistics equal the batch statistics.
* :class:`INLPEraser` (:mod:`.inlp`) — Iterative Nullspace Projection, Ravfogel et al. (2020), "Null It Out:
  Guarding Protected Attributes by Iterative Nullspace Projection" (ACL 2020).
* :class:`RLACEEraser` (:mod:`.rlace`) — Relaxed Linear Adversarial Concept Erasure, Ravfogel et al. (2022),
  "Linear Adversarial Concept Erasure" (ICML 2022): the relaxed minimax game over the fantope with projected
  gradient steps, then the rank-k projection from the top eigenvectors.
* :class:`MedianEraser` (:mod:`.median`) — a median-based variant ("mean ablation is weak to outliers; what you
  want is something like the median"): orthogonal projections removing the difference of the class-wise
  coordinate medians, repeated while a held-out rank test still separates the classes along the new direction.

They share :class:`~.base.ProjectionEraser` (:mod:`.base`). :func:`evaluate_erasure` (:mod:`.evaluation`) probes
the erased held-out data with linear and non-linear probes — equal class means (linear guardedness) say nothing
about non-linear probes, which :func:`make_outlier_data` (:mod:`.data`) shows.
"""

from __future__ import annotations

from typing import Any, Literal

from interplab.analyses.representations.erasure.base import ProjectionEraser
from interplab.analyses.representations.erasure.data import load_acts_dir, make_outlier_data, make_synthetic_data
from interplab.analyses.representations.erasure.evaluation import (
    ErasureResult,
    evaluate_erasure,
    label_entropy,
    majority_acc,
    probe_scores,
)
from interplab.analyses.representations.erasure.inlp import INLPClassifier, INLPEraser
from interplab.analyses.representations.erasure.leace import LeaceEraser
from interplab.analyses.representations.erasure.mean import MeanDifferenceEraser
from interplab.analyses.representations.erasure.median import MedianEraser
from interplab.analyses.representations.erasure.rlace import RLACEEraser, RLACEOptimizer, fantope_project

__all__ = [
    "ERASERS",
    "EraserMethod",
    "ErasureResult",
    "INLPClassifier",
    "INLPEraser",
    "LeaceEraser",
    "MeanDifferenceEraser",
    "MedianEraser",
    "ProjectionEraser",
    "RLACEEraser",
    "RLACEOptimizer",
    "evaluate_erasure",
    "fantope_project",
    "label_entropy",
    "load_acts_dir",
    "majority_acc",
    "make_eraser",
    "make_outlier_data",
    "make_synthetic_data",
    "probe_scores",
]

EraserMethod = Literal["leace", "mean", "inlp", "rlace", "median"]
"""The erasers by name (``interplab erase --method``)."""

ERASERS: dict[str, type[ProjectionEraser]] = {
    "mean": MeanDifferenceEraser,
    "leace": LeaceEraser,
    "inlp": INLPEraser,
    "rlace": RLACEEraser,
    "median": MedianEraser,
}


def make_eraser(method: EraserMethod, **kw: Any) -> ProjectionEraser:
    """An unfitted eraser by name.

    Args:
        method: ``leace`` (Belrose et al. 2023) | ``mean`` | ``inlp`` (Ravfogel et al. 2020) | ``rlace``
            (Ravfogel et al. 2022) | ``median``.
        **kw: passed to the eraser's constructor.
    """
    if method not in ERASERS:
        raise ValueError(f"unknown erasure method {method!r}; choose one of {', '.join(ERASERS)}.")
    return ERASERS[method](**kw)
