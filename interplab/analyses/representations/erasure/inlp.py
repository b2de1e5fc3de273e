"""Iterative Nullspace Projection: Ravfogel et al. (2020), "Null It Out: Guarding Protected Attributes by
Iterative Nullspace Projection" (ACL 2020)."""

from __future__ import annotations

from typing import Any, Literal, Self

import numpy as np

from interplab.analyses.representations.erasure.base import ProjectionEraser, check_xy, orthonormal_basis
from interplab.analyses.representations.erasure.evaluation import majority_acc

__all__ = ["INLPClassifier", "INLPEraser"]

INLPClassifier = Literal["svm", "logistic"]
"""The linear classifier INLP trains each round: ``LinearSVC`` (as in the paper) or logistic regression."""


class INLPEraser(ProjectionEraser):
    """Iterative Nullspace Projection (Ravfogel et al. 2020).

    Repeat ``n_iter`` times: train a linear classifier (``clf``: ``"svm"`` = ``LinearSVC`` as in the paper,
    or ``"logistic"``) on the current projected data, add the row space of its weights to the removed
    subspace, and project the *original* data onto the nullspace of all weights found so far (the paper's
    ``P = I − P_{R(W_1) + … + R(W_n)}``, which is an orthogonal projection). Stops early once a
    classifier trained on the projected data scores within ``tol`` of the majority rate on a held-out
    split (``dev_frac`` of the data).

    Args:
        n_iter: at most this many classifiers (each removes the row space of its weights).
        clf: ``"svm"`` (``LinearSVC``, as in the paper) or ``"logistic"``.
        C: inverse regularisation strength of each classifier.
        tol: stop once a classifier on the projected data is within ``tol`` of the majority rate.
        dev_frac: held-out fraction for that stopping test (0: run all ``n_iter`` rounds).
        random_state: seeds the held-out split and the SVM.
    """

    def __init__(
        self,
        n_iter: int = 10,
        clf: INLPClassifier = "svm",
        C: float = 1.0,
        tol: float = 0.01,
        dev_frac: float = 0.3,
        random_state: int = 0,
    ):
        self.n_iter = n_iter
        self.clf = clf
        self.C = C
        self.tol = tol
        self.dev_frac = dev_frac
        self.random_state = random_state

    def _new_clf(self):
        if self.clf == "svm":
            from sklearn.svm import LinearSVC

            return LinearSVC(C=self.C, fit_intercept=True, max_iter=20000, random_state=self.random_state)
        if self.clf == "logistic":
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression(C=self.C, max_iter=2000)
        raise ValueError(f"clf must be 'svm' or 'logistic', not {self.clf!r}.")

    def fit(self, X: Any, y: Any) -> Self:
        """Find the nullspace projection on ``X [n, d]`` with labels ``y [n]``."""
        X, y, classes = check_xy(X, y)
        self.classes_ = classes
        rng = np.random.default_rng(self.random_state)
        idx = rng.permutation(len(X))
        n_dev = round(self.dev_frac * len(X)) if self.dev_frac else 0
        dev, tr = idx[:n_dev], idx[n_dev:]
        maj = majority_acc(y[dev]) if n_dev else None
        center = X.mean(0)
        Xc = X - center
        U = np.zeros((X.shape[1], 0))
        self.dev_acc_ = []
        for _ in range(self.n_iter):
            Xp = Xc - (Xc @ U) @ U.T
            clf = self._new_clf().fit(Xp[tr], y[tr])
            if n_dev:
                acc = float(clf.score(Xp[dev], y[dev]))
                self.dev_acc_.append(acc)
                assert maj is not None
                if acc <= maj + self.tol:
                    break
            W = np.atleast_2d(clf.coef_)
            U = orthonormal_basis(np.concatenate([U, W.T], axis=1))
        self._set_orthogonal(U, center)
        return self
