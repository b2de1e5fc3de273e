"""A median-based variant of the mean-difference projection, robust to outliers (mean ablation is weak to
outliers; the median targets the bulk of each class)."""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from interplab.analyses.representations.erasure.base import ProjectionEraser, check_xy, orthonormal_basis

__all__ = ["MedianEraser"]


class MedianEraser(ProjectionEraser):
    """Median-based variant of the mean-difference projection (robust to outliers).

    Direction: the difference of class-wise coordinate medians (for k > 2 classes, the top left singular
    vector of the matrix of ``median_c − median``). It is projected out (orthogonally) and the procedure is
    repeated on the projected data. With ``rank=None`` the number of median directions is chosen honestly by
    sample splitting: directions are estimated on one half of the data and kept only while a rank test
    (Mann–Whitney U for two classes, Kruskal–Wallis otherwise) on the *other* half still separates the
    classes along the new direction at level ``alpha`` (at most ``max_rank``); the final directions are then
    re-estimated on all the data. With an integer ``rank`` exactly that many are removed.

    ``with_mean=True`` (default) first removes the class-mean differences (as :class:`MeanDifferenceEraser`,
    so the output is linearly guarded for convex losses) and then the median directions of what is left;
    ``with_mean=False`` is the pure median variant, which targets the bulk of each class but does not
    guarantee equal class means. The map fixes the training data's coordinatewise median (``with_mean=False``)
    or mean (``with_mean=True``).

    Args:
        rank: median directions to remove (None: chosen by the held-out rank test).
        alpha: level of that rank test.
        max_rank: at most this many median directions when ``rank`` is None.
        with_mean: remove the class-mean differences first (linear guardedness).
        random_state: seeds the sample split of the rank test.
    """

    def __init__(
        self,
        rank: int | None = None,
        alpha: float = 1e-3,
        max_rank: int = 10,
        with_mean: bool = True,
        random_state: int = 0,
    ):
        self.rank = rank
        self.with_mean = with_mean
        self.alpha = alpha
        self.max_rank = max_rank
        self.random_state = random_state

    @staticmethod
    def _direction(X: np.ndarray, y: np.ndarray, k: int) -> np.ndarray | None:
        med = np.median(X, axis=0)
        D = np.stack([np.median(X[y == c], axis=0) - med for c in range(k)], axis=1)
        if k == 2:
            v = D[:, 1] - D[:, 0]
        else:
            v = np.linalg.svd(D, full_matrices=False)[0][:, 0]
        nv = np.linalg.norm(v)
        return None if nv < 1e-12 else v / nv

    @staticmethod
    def _pvalue(s: np.ndarray, y: np.ndarray, k: int) -> float:
        from scipy import stats

        groups = [s[y == c] for c in range(k)]
        if any(len(g_) == 0 for g_ in groups):
            return 1.0
        if k == 2:
            return float(stats.mannwhitneyu(groups[0], groups[1]).pvalue)
        return float(stats.kruskal(*groups).pvalue)

    def _start(self, X, y, k) -> np.ndarray:
        if not self.with_mean:
            return np.zeros((X.shape[1], 0))
        mu = X.mean(0)
        return orthonormal_basis(np.stack([X[y == c].mean(0) - mu for c in range(k)], axis=1))

    def _directions(self, X, y, k, r) -> np.ndarray:
        U = self._start(X, y, k)
        for _ in range(r):
            Xp = X - (X @ U) @ U.T
            v = self._direction(Xp, y, k)
            if v is None:
                break
            v = v - U @ (U.T @ v)
            if np.linalg.norm(v) < 1e-9:
                break
            U = np.concatenate([U, (v / np.linalg.norm(v))[:, None]], axis=1)
        return U

    def fit(self, X: Any, y: Any) -> Self:
        """Find the median directions of ``X [n, d]`` with labels ``y [n]``."""
        X, y, classes = check_xy(X, y)
        k = len(classes)
        self.classes_ = classes
        center = X.mean(0) if self.with_mean else np.median(X, axis=0)
        Xc = X - center
        if self.rank is not None:
            r = int(self.rank)
        else:
            rng = np.random.default_rng(self.random_state)
            idx = rng.permutation(len(X))
            a, b = idx[: len(X) // 2], idx[len(X) // 2 :]
            U = self._start(Xc[a], y[a], k)
            r, self.pvalues_ = 0, []
            for _ in range(min(self.max_rank, X.shape[1] - 1)):
                Xa = Xc[a] - (Xc[a] @ U) @ U.T
                v = self._direction(Xa, y[a], k)
                if v is None:
                    break
                v = v - U @ (U.T @ v)
                v /= np.linalg.norm(v)
                Xb = Xc[b] - (Xc[b] @ U) @ U.T
                p = self._pvalue(Xb @ v, y[b], k)
                self.pvalues_.append(p)
                if p > self.alpha:
                    break
                U = np.concatenate([U, v[:, None]], axis=1)
                r += 1
        self._set_orthogonal(self._directions(Xc, y, k, r), center)
        return self
