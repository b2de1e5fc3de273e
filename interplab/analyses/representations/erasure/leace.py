"""LEACE, least-squares concept erasure in closed form: Belrose et al. (2023), "LEACE: Perfect linear concept
erasure in closed form" (NeurIPS 2023). Streaming (``partial_fit``) statistics equal the batch statistics."""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from interplab.analyses.representations.erasure.base import ProjectionEraser, as_numpy, check_xy, eigh, gram, matmul

__all__ = ["LeaceEraser"]


class LeaceEraser(ProjectionEraser):
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

    Args:
        svd_tol: relative tolerance below which singular values of ``W Σ_XZ`` are dropped.
        eig_tol: eigenvalues of ``Σ_XX`` at or below it are treated as zero in the whitening (None:
            ``largest × d × machine epsilon``).
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

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> Self:
        """Update the running statistics with one batch (``classes`` must be given on the first call
        unless every class occurs in it). The eraser is solved from the statistics when next used
        (``transform``, ``P_``, ``rank_``), not after every batch."""
        Xn = as_numpy(X).astype(np.float64)
        yn = as_numpy(y).reshape(-1)
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
        self.sxx_ += gram(dx) + f * np.outer(delta_x, delta_x)
        self.sxz_ += dx.T @ dz + f * np.outer(delta_x, delta_z)
        self.mean_x_ = self.mean_x_ + delta_x * (m / tot)
        self.mean_z_ = self.mean_z_ + delta_z * (m / tot)
        self.n_ = tot
        self._stale = True
        return self

    def fit(self, X: Any, y: Any) -> Self:
        """Statistics of ``X [n, d]`` with labels ``y [n]`` (restarting from none), then the closed form."""
        for a in ("n_", "left_"):
            if hasattr(self, a):
                delattr(self, a)
        X, y_idx, classes = check_xy(X, y)
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
        L, V = eigh(S)
        tol = self.eig_tol if self.eig_tol is not None else L[-1] * S.shape[0] * np.finfo(np.float64).eps
        keep = L > tol
        Lc = np.clip(L, 0, None)
        W = matmul(V * np.where(keep, 1 / np.sqrt(np.where(keep, Lc, 1)), 0), V.T)
        W_inv = matmul(V * np.where(keep, np.sqrt(Lc), 0), V.T)
        u, s, _ = np.linalg.svd(W @ self.sigma_xz_, full_matrices=False)
        u = u[:, s > self.svd_tol * max(s.max(), 1e-300)] if s.size else u
        # column-vector form r(x) = x - W⁺ U Uᵀ W (x - μ); rows: x' = x - (x - μ) W U Uᵀ W⁺ (W, W⁺ symmetric)
        self.left_ = W @ u
        self.right_ = u.T @ W_inv
        self.center_ = self.mean_x_.copy()
