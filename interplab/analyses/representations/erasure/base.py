"""What every linear eraser here shares: the affine map ``x' = x − (x − c) L R`` of :class:`ProjectionEraser`
and the small linear algebra the estimators use (orthonormal bases, float64 products through torch).

The layout follows EleutherAI's ``concept-erasure``: one estimator per module (:mod:`.mean`, :mod:`.leace`,
:mod:`.inlp`, :mod:`.rlace`, :mod:`.median`), the evaluation in :mod:`.evaluation`, data in :mod:`.data`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

__all__ = ["ProjectionEraser", "as_numpy", "check_xy", "eigh", "gram", "like_input", "matmul", "orthonormal_basis"]


def as_numpy(X: Any) -> np.ndarray:
    """``X`` as a numpy array (a torch tensor is detached and moved to the CPU first)."""
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    return np.asarray(X)


def check_xy(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X float64 [n, d], class index of every row [n], sorted classes)``; refuses bad shapes and a single class."""
    X = as_numpy(X).astype(np.float64)
    y = as_numpy(y).reshape(-1)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array [n, d], got shape {X.shape}.")
    if len(y) != len(X):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels.")
    classes, y_idx = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"y has a single class ({classes.tolist()}); concept erasure needs at least two.")
    return X, y_idx, classes


def like_input(Xin: Any, Xout: np.ndarray) -> Any:
    """Return ``Xout`` with the type (numpy / torch) and dtype of ``Xin``."""
    if hasattr(Xin, "detach"):
        import torch

        return torch.as_tensor(Xout, dtype=Xin.dtype, device=Xin.device)
    Xin = np.asarray(Xin)
    return Xout.astype(Xin.dtype if np.issubdtype(Xin.dtype, np.floating) else np.float64, copy=False)


def orthonormal_basis(U: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis ``[d, r]`` of the column span of ``U`` (columns below ``tol`` relative dropped)."""
    if U.size == 0:
        return U.reshape(U.shape[0], 0)
    u, s, _ = np.linalg.svd(U, full_matrices=False)
    keep = s > tol * max(s.max(), 1e-300)
    return u[:, keep]


def gram(a: np.ndarray) -> np.ndarray:
    """``aᵀa`` in float64 through torch (its BLAS and eigensolver are as fast as numpy's or faster, and the same
    library the peer implementation uses, so timings compare like with like)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a))
    return (t.T @ t).numpy()


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in float64 through torch (see :func:`gram`)."""
    import torch

    return (torch.from_numpy(np.ascontiguousarray(a)) @ torch.from_numpy(np.ascontiguousarray(b))).numpy()


def eigh(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the symmetric ``S`` through torch (see :func:`gram`)."""
    import torch

    L, V = torch.linalg.eigh(torch.from_numpy(np.ascontiguousarray(S)))
    return L.numpy(), V.numpy()


class ProjectionEraser(BaseEstimator, TransformerMixin):
    """Base of the erasers: the transform ``x' = x - (x - center) @ left @ right`` (an affine map fixing ``center``).

    Subclasses set ``left_ [d, r]``, ``right_ [r, d]`` and ``center_ [d]``. For orthogonal projections
    ``left = U``, ``right = U.T``; for LEACE ``left = W U``, ``right = Uᵀ W⁺`` (an oblique projection).
    A subclass that computes them lazily overrides :meth:`_solution`, which runs before they are read."""

    def _solution(self) -> None:
        """Bring ``left_`` / ``right_`` / ``center_`` up to date (they always are here)."""

    left_: np.ndarray
    right_: np.ndarray
    center_: np.ndarray

    def transform(self, X: Any) -> Any:
        """Erase the concept from ``X [n, d]`` (numpy or torch; the output has the input's type and dtype)."""
        self._solution()
        if not hasattr(self, "left_"):
            raise ValueError(f"{type(self).__name__} is not fitted; call fit(X, y) first.")
        Xn = as_numpy(X).astype(np.float64)
        if Xn.ndim != 2 or Xn.shape[1] != self.left_.shape[0]:
            raise ValueError(f"X must be [n, {self.left_.shape[0]}], got {Xn.shape}.")
        out = Xn - ((Xn - self.center_) @ self.left_) @ self.right_
        return like_input(X, out)

    @property
    def P_(self) -> np.ndarray:
        """The linear part of the map as a ``[d, d]`` matrix acting on row vectors: ``x' = c + (x - c) @ P``."""
        self._solution()
        return np.eye(self.left_.shape[0]) - self.left_ @ self.right_

    @property
    def rank_(self) -> int:
        """Dimension of the subspace the eraser removes."""
        self._solution()
        return int(self.left_.shape[1])

    def _set_orthogonal(self, U: np.ndarray, center: np.ndarray) -> None:
        U = orthonormal_basis(U)
        self.left_, self.right_, self.center_ = U, U.T.copy(), center

    def get_feature_names_out(self, input_features=None):  # pragma: no cover - sklearn nicety
        self._solution()
        return np.asarray(
            input_features if input_features is not None else [f"x{i}" for i in range(self.left_.shape[0])]
        )
