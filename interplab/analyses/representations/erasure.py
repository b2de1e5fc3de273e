"""Linear concept erasure as scikit-learn ``fit`` / ``transform`` estimators, and an honest evaluation harness.

Erasers (each removes a concept ``y`` — class labels — from representations ``X [n, d]``):

* :class:`MeanDifferenceEraser` — orthogonal projection removing the span of the class-mean differences
  (the classic "mean-difference" / difference-in-means direction).
* :class:`LeaceEraser` — LEACE, the least-squares closed form of Belrose et al. (2023), "LEACE: Perfect
  linear concept erasure in closed form" (NeurIPS 2023). Streaming (``partial_fit``) statistics equal the
  batch statistics.
* :class:`INLPEraser` — Iterative Nullspace Projection, Ravfogel et al. (2020), "Null It Out: Guarding
  Protected Attributes by Iterative Nullspace Projection" (ACL 2020).
* :class:`RLACEEraser` — Relaxed Linear Adversarial Concept Erasure, Ravfogel et al. (2022), "Linear
  Adversarial Concept Erasure" (ICML 2022): the relaxed minimax game over the fantope with projected
  gradient steps, then the rank-k projection from the top eigenvectors.
* :class:`MedianEraser` — a median-based variant (the seed's point "mean ablation is weak to outliers;
  what you want is something like the median"): orthogonal projections removing the difference of the
  class-wise coordinate medians, repeated while a held-out rank test still separates the classes along
  the new direction.

Why "equal class means" is not the end of the story: LEACE's guarantee (Belrose et al. 2023, Thm 3.1)
is that after erasure no *linear* predictor beats the constant predictor for any *convex* loss, which is
equivalent to equal class-conditional means. It says nothing about the 0-1 loss or about non-linear
predictors. :func:`make_outlier_data` builds a dataset where a few class-1 outliers cancel the bulk
separation of the class means along one coordinate: after mean-difference or LEACE erasure a logistic
regression is at chance but an MLP, gradient-boosted trees or even a threshold on that coordinate are
far above the majority rate. :func:`evaluate_erasure` measures exactly that (linear probe accuracy and
log-loss against the label entropy; MLP; gradient-boosted trees; all on held-out data).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

__all__ = [
    "ERASERS",
    "ErasureResult",
    "INLPEraser",
    "LeaceEraser",
    "MeanDifferenceEraser",
    "MedianEraser",
    "RLACEEraser",
    "evaluate_erasure",
    "fantope_project",
    "label_entropy",
    "load_acts_dir",
    "majority_acc",
    "make_eraser",
    "make_outlier_data",
    "make_synthetic_data",
]


# ----------------------------------------------------------------------------------------- helpers


def _as_np(X) -> np.ndarray:
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    return np.asarray(X)


def _check_xy(X, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = _as_np(X).astype(np.float64)
    y = _as_np(y).reshape(-1)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array [n, d], got shape {X.shape}.")
    if len(y) != len(X):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels.")
    classes, y_idx = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"y has a single class ({classes.tolist()}); concept erasure needs at least two.")
    return X, y_idx, classes


def _out_like(Xin, Xout: np.ndarray):
    """Return ``Xout`` with the type (numpy / torch) and dtype of ``Xin``."""
    if hasattr(Xin, "detach"):
        import torch

        return torch.as_tensor(Xout, dtype=Xin.dtype, device=Xin.device)
    Xin = np.asarray(Xin)
    return Xout.astype(Xin.dtype if np.issubdtype(Xin.dtype, np.floating) else np.float64, copy=False)


def _orthonormal(U: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis ``[d, r]`` of the column span of ``U`` (columns below ``tol`` relative dropped)."""
    if U.size == 0:
        return U.reshape(U.shape[0], 0)
    u, s, _ = np.linalg.svd(U, full_matrices=False)
    keep = s > tol * max(s.max(), 1e-300)
    return u[:, keep]


def majority_acc(y) -> float:
    """Accuracy of always predicting the most frequent class."""
    _, c = np.unique(_as_np(y), return_counts=True)
    return float(c.max() / c.sum())


def label_entropy(y) -> float:
    """Entropy of the label distribution in nats: the log-loss of the best constant predictor."""
    _, c = np.unique(_as_np(y), return_counts=True)
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def _gram(a: np.ndarray) -> np.ndarray:
    """``aᵀa`` in float64 through torch (its BLAS and eigensolver are as fast as numpy's or faster, and the same
    library the peer implementation uses, so timings compare like with like)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a))
    return (t.T @ t).numpy()


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import torch

    return (torch.from_numpy(np.ascontiguousarray(a)) @ torch.from_numpy(np.ascontiguousarray(b))).numpy()


def _eigh(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    L, V = torch.linalg.eigh(torch.from_numpy(np.ascontiguousarray(S)))
    return L.numpy(), V.numpy()


class _ProjectionEraser(BaseEstimator, TransformerMixin):
    """Shared transform: ``x' = x - (x - center) @ left @ right`` (an affine map fixing ``center``).

    Subclasses set ``left_ [d, r]``, ``right_ [r, d]`` and ``center_ [d]``. For orthogonal projections
    ``left = U``, ``right = U.T``; for LEACE ``left = W U``, ``right = Uᵀ W⁺`` (an oblique projection).
    A subclass that computes them lazily overrides :meth:`_solution`, which runs before they are read."""

    def _solution(self) -> None:
        """Bring ``left_`` / ``right_`` / ``center_`` up to date (they always are here)."""

    def transform(self, X):
        self._solution()
        if not hasattr(self, "left_"):
            raise ValueError(f"{type(self).__name__} is not fitted; call fit(X, y) first.")
        Xn = _as_np(X).astype(np.float64)
        if Xn.ndim != 2 or Xn.shape[1] != self.left_.shape[0]:
            raise ValueError(f"X must be [n, {self.left_.shape[0]}], got {Xn.shape}.")
        out = Xn - ((Xn - self.center_) @ self.left_) @ self.right_
        return _out_like(X, out)

    @property
    def P_(self) -> np.ndarray:
        """The linear part of the map as a ``[d, d]`` matrix acting on row vectors: ``x' = c + (x - c) @ P``."""
        self._solution()
        return np.eye(self.left_.shape[0]) - self.left_ @ self.right_

    @property
    def rank_(self) -> int:
        self._solution()
        return int(self.left_.shape[1])

    def _set_orthogonal(self, U: np.ndarray, center: np.ndarray) -> None:
        U = _orthonormal(U)
        self.left_, self.right_, self.center_ = U, U.T.copy(), center

    def get_feature_names_out(self, input_features=None):  # pragma: no cover - sklearn nicety
        self._solution()
        return np.asarray(
            input_features if input_features is not None else [f"x{i}" for i in range(self.left_.shape[0])]
        )


# ----------------------------------------------------------------------------------------- mean difference


class MeanDifferenceEraser(_ProjectionEraser):
    """Project out the span of the class-mean differences ``μ_c − μ`` (rank ≤ k − 1 for k classes).

    After the (orthogonal) projection the class means are equal, so by Belrose et al. (2023, Thm 3.1)
    the data are linearly guarded for convex losses; unlike LEACE the projection is orthogonal rather than
    the least-squares-optimal oblique one, so it moves the data more. The map fixes the global mean."""

    def fit(self, X, y):
        X, y, classes = _check_xy(X, y)
        mu = X.mean(0)
        D = np.stack([X[y == c].mean(0) - mu for c in range(len(classes))], axis=1)
        self.classes_ = classes
        self._set_orthogonal(D, mu)
        return self


# ----------------------------------------------------------------------------------------- LEACE


class LeaceEraser(_ProjectionEraser):
    r"""LEACE (Belrose et al. 2023): the affine eraser with the least mean squared change that makes the
    class-conditional means equal (hence no linear classifier can beat a constant on any convex loss).

    Derivation (closed form, their Thm 4.1). Let ``Z`` be the one-hot concept (for two classes a single
    0/1 column), ``Σ_XX = Cov(X)``, ``Σ_XZ = Cov(X, Z)``. Linear guardedness of ``r(X) = PX + b`` holds iff
    ``Cov(r(X), Z) = P Σ_XZ = 0``. Minimising ``E‖r(X) − X‖²`` (more generally ``E‖r(X) − X‖²_M``) subject to
    ``P Σ_XZ = 0`` over affine maps gives ``b = (I − P) E[X]`` and, with the whitening ``W = (Σ_XX^{1/2})⁺``
    and ``Π = U Uᵀ`` the orthogonal projection onto ``colspace(W Σ_XZ)`` (``U`` from its SVD),

        ``P* = I − W⁺ Π W``,   i.e.   ``r(x) = x − W⁺ U Uᵀ W (x − μ)``.

    Intuition: in whitened coordinates the constraint asks to remove the directions ``W Σ_XZ``; the
    orthogonal projection there is optimal, and un-whitening maps it back. ``rank(I − P*) ≤ k`` (the number
    of columns of ``Z``), and the class means of the output are equal (``P* Σ_XZ = W⁺(I − Π)W Σ_XZ = 0``).

    Statistics are accumulated in float64 with Chan et al.'s pairwise update, so ``partial_fit`` on shards
    equals ``fit`` on the concatenation (tested). ``svd_tol`` drops singular values of ``W Σ_XZ`` below
    ``svd_tol × largest`` (relative; EleutherAI's ``concept-erasure`` uses an absolute 0.01). No covariance
    shrinkage (``concept-erasure`` applies one by default; the tests compare with ``shrinkage=False``).
    """

    def __init__(self, svd_tol: float = 1e-6, eig_tol: float | None = None):
        self.svd_tol = svd_tol
        self.eig_tol = eig_tol

    # -- streaming statistics
    def _reset(self, d: int, classes: np.ndarray) -> None:
        self.n_ = 0
        self.classes_ = classes
        k = 1 if len(classes) == 2 else len(classes)
        self.mean_x_ = np.zeros(d)
        self.mean_z_ = np.zeros(k)
        self.sxx_ = np.zeros((d, d))
        self.sxz_ = np.zeros((d, k))

    def _z(self, y_idx: np.ndarray) -> np.ndarray:
        if len(self.classes_) == 2:
            return y_idx.reshape(-1, 1).astype(np.float64)
        return np.eye(len(self.classes_))[y_idx]

    def partial_fit(self, X, y, classes=None):
        """Update the running statistics with one batch (``classes`` must be given on the first call
        unless every class occurs in it). The eraser is solved from the statistics when next used
        (``transform``, ``P_``, ``rank_``), not after every batch."""
        Xn = _as_np(X).astype(np.float64)
        yn = _as_np(y).reshape(-1)
        if Xn.ndim != 2 or len(yn) != len(Xn):
            raise ValueError(f"need X [n, d] and y [n]; got {Xn.shape} and {yn.shape}.")
        if not hasattr(self, "n_"):
            cl = np.unique(yn) if classes is None else np.asarray(classes)
            if len(cl) < 2:
                raise ValueError("the first partial_fit batch has one class; pass classes=[...] listing all of them.")
            self._reset(Xn.shape[1], np.sort(cl))
        if Xn.shape[1] != self.mean_x_.shape[0]:
            raise ValueError(f"X has {Xn.shape[1]} features; this eraser was started with {self.mean_x_.shape[0]}.")
        if not np.isin(yn, self.classes_).all():
            raise ValueError(f"y has labels outside the classes {self.classes_.tolist()} given on the first call.")
        Z = self._z(np.searchsorted(self.classes_, yn))
        m = len(Xn)
        if m == 0:
            return self
        mx, mz = Xn.mean(0), Z.mean(0)
        dx, dz = Xn - mx, Z - mz
        n = self.n_
        tot = n + m
        delta_x, delta_z = mx - self.mean_x_, mz - self.mean_z_
        f = n * m / tot
        self.sxx_ += _gram(dx) + f * np.outer(delta_x, delta_x)
        self.sxz_ += dx.T @ dz + f * np.outer(delta_x, delta_z)
        self.mean_x_ = self.mean_x_ + delta_x * (m / tot)
        self.mean_z_ = self.mean_z_ + delta_z * (m / tot)
        self.n_ = tot
        self._stale = True
        return self

    def fit(self, X, y):
        for a in ("n_", "left_"):
            if hasattr(self, a):
                delattr(self, a)
        X, y_idx, classes = _check_xy(X, y)
        self._reset(X.shape[1], classes)
        self.partial_fit(X, classes[y_idx])
        self._solution()
        return self

    def _solution(self) -> None:
        """Solve once after the statistics changed (``partial_fit`` only marks the solution stale)."""
        if getattr(self, "_stale", False):
            self._solve()
            self._stale = False

    @property
    def sigma_xx_(self) -> np.ndarray:
        return self.sxx_ / max(self.n_ - 1, 1)

    @property
    def sigma_xz_(self) -> np.ndarray:
        return self.sxz_ / max(self.n_ - 1, 1)

    def _solve(self) -> None:
        if self.n_ < 2:
            d = self.mean_x_.shape[0]
            self.left_, self.right_, self.center_ = np.zeros((d, 0)), np.zeros((0, d)), self.mean_x_.copy()
            return
        S = (self.sigma_xx_ + self.sigma_xx_.T) / 2
        L, V = _eigh(S)
        tol = self.eig_tol if self.eig_tol is not None else L[-1] * S.shape[0] * np.finfo(np.float64).eps
        keep = L > tol
        Lc = np.clip(L, 0, None)
        W = _mm(V * np.where(keep, 1 / np.sqrt(np.where(keep, Lc, 1)), 0), V.T)
        W_inv = _mm(V * np.where(keep, np.sqrt(Lc), 0), V.T)
        u, s, _ = np.linalg.svd(W @ self.sigma_xz_, full_matrices=False)
        u = u[:, s > self.svd_tol * max(s.max(), 1e-300)] if s.size else u
        # column-vector form r(x) = x - W⁺ U Uᵀ W (x - μ); rows: x' = x - (x - μ) W U Uᵀ W⁺ (W, W⁺ symmetric)
        self.left_ = W @ u
        self.right_ = u.T @ W_inv
        self.center_ = self.mean_x_.copy()


# ----------------------------------------------------------------------------------------- INLP


class INLPEraser(_ProjectionEraser):
    """Iterative Nullspace Projection (Ravfogel et al. 2020).

    Repeat ``n_iter`` times: train a linear classifier (``clf``: ``"svm"`` = ``LinearSVC`` as in the paper,
    or ``"logistic"``) on the current projected data, add the row space of its weights to the removed
    subspace, and project the *original* data onto the nullspace of all weights found so far (the paper's
    ``P = I − P_{R(W_1) + … + R(W_n)}``, which is an orthogonal projection). Stops early once a
    classifier trained on the projected data scores within ``tol`` of the majority rate on a held-out
    split (``dev_frac`` of the data)."""

    def __init__(
        self,
        n_iter: int = 10,
        clf: str = "svm",
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

    def fit(self, X, y):
        X, y, classes = _check_xy(X, y)
        self.classes_ = classes
        rng = np.random.default_rng(self.random_state)
        idx = rng.permutation(len(X))
        n_dev = int(round(self.dev_frac * len(X))) if self.dev_frac else 0
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
                if acc <= maj + self.tol:
                    break
            W = np.atleast_2d(clf.coef_)
            U = _orthonormal(np.concatenate([U, W.T], axis=1))
        self._set_orthogonal(U, center)
        return self


# ----------------------------------------------------------------------------------------- RLACE


def fantope_project(A, k: int, iters: int = 100):
    """Euclidean projection of a symmetric matrix onto the fantope ``{P : 0 ⪯ P ⪯ I, tr P = k}``
    (Vu et al. 2013; used by Ravfogel et al. 2022): eigendecompose ``A = U diag(λ) Uᵀ`` and return
    ``U diag(clip(λ − θ, 0, 1)) Uᵀ`` with ``θ`` found by bisection so that the clipped values sum to ``k``.
    Works on numpy arrays and torch tensors (returns the same type)."""
    import torch

    is_np = not isinstance(A, torch.Tensor)
    At = torch.as_tensor(A, dtype=torch.float64) if is_np else A
    S = (At + At.T) / 2
    lam_t, U = torch.linalg.eigh(S)
    lam = lam_t.double().cpu().numpy()
    lo, hi = lam.min() - 1.0, lam.max()
    for _ in range(iters):  # f(θ) = Σ clip(λ − θ, 0, 1) − k is non-increasing in θ
        mid = (lo + hi) / 2
        if np.clip(lam - mid, 0, 1).sum() > k:
            lo = mid
        else:
            hi = mid
    g = torch.as_tensor(np.clip(lam - (lo + hi) / 2, 0, 1), dtype=U.dtype, device=U.device)
    P = (U * g) @ U.T
    return P.numpy() if is_np else P


class RLACEEraser(_ProjectionEraser):
    """Relaxed Linear Adversarial Concept Erasure (Ravfogel et al. 2022, "Linear Adversarial Concept Erasure").

    The rank-k objective ``min_{P∈𝒫_k} max_θ −L(θ; X(I−P), y)`` (𝒫_k: rank-k orthogonal projections) is
    relaxed to the fantope ``ℱ_k = {P : 0 ⪯ P ⪯ I, tr P = k}`` (its convex hull) and solved as in the
    reference implementation (``solve_adv_game``): alternating stochastic gradient steps — the projection
    ascends the loss of a linear predictor (logistic / softmax) and is projected back onto ``ℱ_k`` after each
    step (:func:`fantope_project`), the predictor descends it. Every ``evaluate_every`` steps a fresh
    logistic regression is trained on the data projected with the rank-k projection ``I − VVᵀ`` (``V``: the
    top-k eigenvectors of the relaxed P); the P whose fresh classifier has the highest log-loss is kept, and
    the game stops once that loss is within ``epsilon`` of the label entropy (nothing left to learn). The
    final eraser is the orthogonal projection ``I − VVᵀ`` (about the training mean).

    Departures from the reference defaults (SGD, lr 0.005, up to 75,000 steps of batch 128): SGD with lr 0.05
    and at most 3,000 steps of batch 256, which reach the label entropy on our tests in a few hundred steps on
    a CPU; the predictor is a plain linear layer (no weight penalty besides SGD's weight decay, as there).
    Runs single-threaded (small matrices; faster than contending for shared cores)."""

    def __init__(
        self,
        rank: int = 1,
        n_iter: int = 3000,
        lr_P: float = 0.05,
        lr_clf: float = 0.05,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        evaluate_every: int = 100,
        epsilon: float = 0.0015,
        optimizer: str = "sgd",
        random_state: int = 0,
    ):
        self.rank = rank
        self.n_iter = n_iter
        self.lr_P = lr_P
        self.lr_clf = lr_clf
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.evaluate_every = evaluate_every
        self.epsilon = epsilon
        self.optimizer = optimizer
        self.random_state = random_state

    @staticmethod
    def _top(P: np.ndarray, k: int) -> np.ndarray:
        _, V = np.linalg.eigh((P + P.T) / 2)
        return V[:, -k:]

    def fit(self, X, y):
        from interplab.runtime import torch_threads

        with torch_threads(1):
            return self._fit(X, y)

    def _fit(self, X, y):
        import torch
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import log_loss

        X, y, classes = _check_xy(X, y)
        n, d = X.shape
        if not 1 <= self.rank < d:
            raise ValueError(f"rank must be in [1, d={d}), got {self.rank}.")
        self.classes_ = classes
        center = X.mean(0)
        Xc = X - center
        g = torch.Generator().manual_seed(self.random_state)
        Xt = torch.as_tensor(Xc, dtype=torch.float32)
        k = len(classes)
        yt = torch.as_tensor(y)
        pred = torch.nn.Linear(d, 1 if k == 2 else k)
        with torch.no_grad():
            pred.weight.copy_(torch.randn(pred.weight.shape, generator=g) * 0.01)
            pred.bias.zero_()
        lossf = (
            (lambda z, t: torch.nn.functional.binary_cross_entropy_with_logits(z.squeeze(-1), t.float()))
            if k == 2
            else (lambda z, t: torch.nn.functional.cross_entropy(z, t))
        )
        P = torch.randn(d, d, generator=g) * 0.1
        P = fantope_project((P + P.T) / 2, self.rank).float().requires_grad_(True)
        Opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}.get(self.optimizer)
        if Opt is None:
            raise ValueError(f"optimizer must be 'sgd' or 'adam', not {self.optimizer!r}.")
        opt_P = Opt([P], lr=self.lr_P, weight_decay=self.weight_decay)
        opt_c = Opt(pred.parameters(), lr=self.lr_clf, weight_decay=self.weight_decay)
        eye = torch.eye(d)
        H = label_entropy(y)
        best_loss, best_P = -math.inf, None
        self.history_ = []
        bs = min(self.batch_size, n)

        def batch():
            i = torch.randint(0, n, (bs,), generator=g)
            return Xt[i], yt[i]

        for it in range(self.n_iter):
            xb, yb = batch()  # adversary (P) step: ascend the predictor's loss
            opt_P.zero_grad()
            Ps = (P + P.T) / 2
            (-lossf(pred(xb @ (eye - Ps)), yb)).backward()
            opt_P.step()
            with torch.no_grad():
                P.copy_(fantope_project(P.detach().double(), self.rank).float())
            xb, yb = batch()  # predictor step: descend it
            opt_c.zero_grad()
            with torch.no_grad():
                Xp = xb @ (eye - (P + P.T) / 2)
            lossf(pred(Xp), yb).backward()
            opt_c.step()
            if it % self.evaluate_every == 0 or it == self.n_iter - 1:
                Pn = P.detach().double().numpy()
                V = self._top(Pn, self.rank)
                Xp = Xc - (Xc @ V) @ V.T
                clf = LogisticRegression(max_iter=1000).fit(Xp, y)
                loss = float(log_loss(y, clf.predict_proba(Xp), labels=np.arange(k)))
                self.history_.append({"iter": it, "clf_loss": loss, "clf_acc": float(clf.score(Xp, y))})
                if loss > best_loss:
                    best_loss, best_P = loss, Pn.copy()
                if abs(best_loss - H) < self.epsilon:
                    break
        self.best_loss_ = best_loss
        self.label_entropy_ = H
        self.P_relaxed_ = best_P
        self._set_orthogonal(self._top(best_P, self.rank), center)
        return self


# ----------------------------------------------------------------------------------------- median


class MedianEraser(_ProjectionEraser):
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
    or mean (``with_mean=True``)."""

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
        return _orthonormal(np.stack([X[y == c].mean(0) - mu for c in range(k)], axis=1))

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

    def fit(self, X, y):
        X, y, classes = _check_xy(X, y)
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


ERASERS: dict[str, type] = {
    "mean": MeanDifferenceEraser,
    "leace": LeaceEraser,
    "inlp": INLPEraser,
    "rlace": RLACEEraser,
    "median": MedianEraser,
}


def make_eraser(method: str, **kw):
    """An unfitted eraser by name: ``leace | mean | inlp | rlace | median`` (keyword arguments passed on)."""
    if method not in ERASERS:
        raise ValueError(f"unknown erasure method {method!r}; choose one of {', '.join(ERASERS)}.")
    return ERASERS[method](**kw)


# ----------------------------------------------------------------------------------------- data


def make_synthetic_data(n: int = 2000, d: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``make_classification`` (2 classes, ``d`` features, 5 informative)."""
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=n,
        n_features=d,
        n_informative=min(5, d),
        n_redundant=min(2, max(d - 5, 0)),
        n_classes=2,
        random_state=seed,
    )
    return X, y


def make_outlier_data(
    n: int = 2000,
    d: int = 10,
    outlier_frac: float = 0.1,
    gap: float = 1.0,
    shift: float = 1.0,
    noise: float = 0.3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Two balanced classes where equalising the class means leaves the concept easy to recover.

    Coordinate 0: class 0 ~ N(−gap, noise²); class 1's bulk ~ N(+gap, noise²) but a fraction ``outlier_frac``
    of class 1 sits far on the other side, at ``−gap − 2·gap·(1 − f)/f``, chosen so that both class means on
    coordinate 0 are exactly ``−gap`` in expectation. Coordinate 1: a plain mean shift of ``shift`` (class 1
    ~ N(+shift/2, 1), class 0 ~ N(−shift/2, 1)). Other coordinates: N(0, 1) noise. A random rotation mixes
    all coordinates so that no method can exploit the axes.

    Mean-based erasers (mean difference, LEACE) remove coordinate 1's direction and equalise the means but
    leave coordinate 0's bulk separation: a threshold, an MLP or gradient-boosted trees still reach about
    ``1 − f/2`` accuracy (0.95 at f = 0.1) against a majority rate of 0.5."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    rng.shuffle(y)
    X = rng.standard_normal((n, d))
    f = outlier_frac
    far = -gap - 2 * gap * (1 - f) / f
    out = (y == 1) & (rng.random(n) < f)
    x0 = np.where(y == 1, gap, -gap).astype(np.float64)
    x0[out] = far
    X[:, 0] = x0 + noise * rng.standard_normal(n)
    X[:, 1] = np.where(y == 1, shift / 2, -shift / 2) + rng.standard_normal(n)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return X @ Q, y


def load_acts_dir(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Activations and labels for ``interplab erase --data acts DIR``.

    Read through the shared loader :func:`interplab.io.activations.load_acts`: ``DIR/acts.safetensors`` with tensors
    ``x`` ``[n, d]`` (float) and ``y`` ``[n]`` (integer labels) — what ``interplab ccs`` writes. A sharded
    directory from ``interplab acts`` carries no labels and is refused with that reason. Several
    ``*.safetensors`` files in DIR, each holding ``x`` and ``y``, are concatenated in sorted file-name order."""
    from safetensors.numpy import load_file

    from interplab.io.activations import MANIFEST, PLAIN, load_acts

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(
            f"activation directory {p} does not exist (expected DIR/acts.safetensors with x [n, d] and y [n])."
        )
    if (p / PLAIN).is_file() or (p / MANIFEST).is_file():
        a = load_acts(p)
        if a.y is None:
            raise ValueError(
                f"{p} holds activations without labels (an `interplab acts` dataset); concept erasure needs "
                "a label per row: write DIR/acts.safetensors with x [n, d] and y [n] (interplab ccs does)."
            )
        X, y = a.x.double().numpy(), a.y.reshape(-1).numpy()
        if len(X) != len(y):
            raise ValueError(f"x must be [n, d] and y [n]; got {X.shape} and {y.shape}.")
        return X, y
    files = sorted(p.glob("*.safetensors"))  # DIR/acts.safetensors itself was read above
    if not files:
        raise FileNotFoundError(
            f"no acts.safetensors (or *.safetensors shards) in {p}; write tensors x [n, d] and y [n]."
        )
    xs, ys = [], []
    for f in files:
        t = load_file(str(f))
        if "x" not in t or "y" not in t:
            raise ValueError(f"{f} must hold tensors 'x' [n, d] and 'y' [n]; it has {sorted(t)}.")
        xs.append(np.asarray(t["x"], dtype=np.float64))
        ys.append(np.asarray(t["y"]).reshape(-1))
    X, y = np.concatenate(xs), np.concatenate(ys)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"x must be [n, d] and y [n]; got {X.shape} and {y.shape}.")
    return X, y


# ----------------------------------------------------------------------------------------- evaluation


def _probe_scores(Xtr, ytr, Xte, yte, nonlinear: bool, seed: int) -> dict[str, float]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # small problems: threads only contend (boosted trees ~15x faster on a busy 2-core box)
        return _probe_scores_1(Xtr, ytr, Xte, yte, nonlinear, seed)


def _probe_scores_1(Xtr, ytr, Xte, yte, nonlinear: bool, seed: int) -> dict[str, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.unique(np.concatenate([ytr, yte]))
    lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(Xtr, ytr)
    out = {
        "linear_acc": float(lr.score(Xte, yte)),
        "linear_logloss": float(log_loss(yte, lr.predict_proba(Xte), labels=labels)),
    }
    if nonlinear:
        mlp = make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, early_stopping=True, random_state=seed),
        ).fit(Xtr, ytr)
        gbt = HistGradientBoostingClassifier(max_iter=200, random_state=seed).fit(Xtr, ytr)
        out["mlp_acc"] = float(mlp.score(Xte, yte))
        out["gbt_acc"] = float(gbt.score(Xte, yte))
        out["nonlinear_acc"] = max(out["mlp_acc"], out["gbt_acc"])
    return out


@dataclass
class ErasureResult:
    """Held-out evaluation of one eraser: probes trained on the erased training split, scored on the test split."""

    method: str
    settings: dict[str, Any]
    before: dict[str, float]
    after: dict[str, float]
    majority_acc: float
    label_entropy: float
    rank: int
    fit_seconds: float
    mean_gap_after: float  # max |class-mean difference| on the erased test data, relative to before
    change_norm: float  # E‖x' − x‖² on the test data, per coordinate
    kind: str = "erasure"

    def headline(self) -> dict[str, Any]:
        h = {
            "method": self.method,
            "majority_acc": self.majority_acc,
            "label_entropy": self.label_entropy,
            "linear_acc_before": self.before["linear_acc"],
            "linear_acc_after": self.after["linear_acc"],
            "linear_logloss_before": self.before["linear_logloss"],
            "linear_logloss_after": self.after["linear_logloss"],
            "rank": self.rank,
            "fit_seconds": self.fit_seconds,
            "mean_gap_after": self.mean_gap_after,
            "mean_sq_change": self.change_norm,
        }
        for k in ("nonlinear_acc", "mlp_acc", "gbt_acc"):
            if k in self.after:
                h[f"{k}_before"] = self.before[k]
                h[f"{k}_after"] = self.after[k]
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()}

    def to_frame(self):
        import pandas as pd

        rows = [{"probe": k, "before": self.before[k], "after": self.after.get(k)} for k in self.before]
        return pd.DataFrame(rows)

    def plot(self):
        import plotly.graph_objects as go

        keys = [k for k in self.before if k.endswith("_acc")]
        fig = go.Figure(
            [
                go.Bar(name="before", x=keys, y=[self.before[k] for k in keys]),
                go.Bar(name="after", x=keys, y=[self.after[k] for k in keys]),
            ]
        )
        fig.add_hline(y=self.majority_acc, line_dash="dash", annotation_text="majority")
        fig.update_layout(
            barmode="group",
            title=f"{self.method}: held-out probe accuracy before / after erasure",
            yaxis_title="accuracy",
            yaxis_range=[0, 1],
        )
        return fig

    def save(self, directory: str | Path) -> Path:
        from interplab.io.results import write_json

        return write_json(directory, f"erasure_{self.method}.json", asdict(self))

    @classmethod
    def load(cls, path: str | Path, method: str = "leace") -> ErasureResult:
        from interplab.io.results import read_json

        d, _ = read_json(path, f"erasure_{method}.json", "erasure")
        return cls(**d)


def evaluate_erasure(
    eraser, X, y, test_frac: float = 0.3, nonlinear: bool = True, seed: int = 0, method: str | None = None
) -> ErasureResult:
    """Fit ``eraser`` on a training split of ``(X, y)`` and probe the erased held-out split: logistic
    regression accuracy and log-loss (compare with the label entropy, the loss of the best constant),
    an MLP and gradient-boosted trees (``nonlinear``); the same probes on the raw data give "before"."""
    from sklearn.model_selection import train_test_split

    X = _as_np(X).astype(np.float64)
    y = _as_np(y).reshape(-1)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_frac, random_state=seed, stratify=y)
    t = time.perf_counter()
    eraser.fit(Xtr, ytr)
    fit_s = time.perf_counter() - t
    Etr, Ete = _as_np(eraser.transform(Xtr)), _as_np(eraser.transform(Xte))
    before = _probe_scores(Xtr, ytr, Xte, yte, nonlinear, seed)
    after = _probe_scores(Etr, ytr, Ete, yte, nonlinear, seed)
    cls = np.unique(yte)

    def gap(Z):
        m = np.stack([Z[yte == c].mean(0) for c in cls])
        return float(np.abs(m - m.mean(0)).max())

    return ErasureResult(
        method=method or type(eraser).__name__,
        settings={"eraser": repr(eraser), "test_frac": test_frac, "seed": seed, "n": len(X), "d": int(X.shape[1])},
        before=before,
        after=after,
        majority_acc=majority_acc(yte),
        label_entropy=label_entropy(yte),
        rank=int(getattr(eraser, "rank_", -1)),
        fit_seconds=round(fit_s, 4),
        mean_gap_after=gap(Ete) / max(gap(Xte), 1e-300),
        change_norm=float(((Ete - Xte) ** 2).mean()),
    )
