"""The mean-difference eraser: the orthogonal projection that removes the span of the class-mean differences
(the difference-in-means direction), linearly guarded by Belrose et al. (2023, Thm 3.1)."""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from interplab.analyses.representations.erasure.base import ProjectionEraser, check_xy

__all__ = ["MeanDifferenceEraser"]


class MeanDifferenceEraser(ProjectionEraser):
    """Project out the span of the class-mean differences ``μ_c − μ`` (rank ≤ k − 1 for k classes).

    After the (orthogonal) projection the class means are equal, so by Belrose et al. (2023, Thm 3.1)
    the data are linearly guarded for convex losses; unlike LEACE the projection is orthogonal rather than
    the least-squares-optimal oblique one, so it moves the data more. The map fixes the global mean."""

    def fit(self, X: Any, y: Any) -> Self:
        """Find the class-mean differences of ``X [n, d]`` with labels ``y [n]``."""
        X, y, classes = check_xy(X, y)
        mu = X.mean(0)
        D = np.stack([X[y == c].mean(0) - mu for c in range(len(classes))], axis=1)
        self.classes_ = classes
        self._set_orthogonal(D, mu)
        return self
