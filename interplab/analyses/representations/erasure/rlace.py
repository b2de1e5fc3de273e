"""Relaxed Linear Adversarial Concept Erasure: Ravfogel et al. (2022), "Linear Adversarial Concept Erasure"
(ICML 2022): the relaxed minimax game over the fantope with projected gradient steps, then the rank-k
projection from the top eigenvectors."""

from __future__ import annotations

import math
from typing import Any, Literal, Self

import numpy as np

from interplab.analyses.representations.erasure.base import ProjectionEraser, check_xy
from interplab.analyses.representations.erasure.evaluation import label_entropy

__all__ = ["RLACEEraser", "RLACEOptimizer", "fantope_project"]

RLACEOptimizer = Literal["sgd", "adam"]
"""The optimizer of both players of the RLACE game."""


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


class RLACEEraser(ProjectionEraser):
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
    Runs single-threaded (small matrices; faster than contending for shared cores).

    Args:
        rank: dimension ``k`` of the removed subspace (1 ≤ k < d).
        n_iter: at most this many steps of the game.
        lr_P: learning rate of the projection (the adversary).
        lr_clf: learning rate of the linear predictor.
        weight_decay: weight decay of both optimizers.
        batch_size: rows per stochastic step.
        evaluate_every: steps between fresh logistic-regression evaluations of the rank-k projection.
        epsilon: stop once the fresh classifier's log-loss is within ``epsilon`` of the label entropy.
        optimizer: ``"sgd"`` (as the reference) or ``"adam"``.
        random_state: seeds the initial projection, the predictor and the batches.
    """

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
        optimizer: RLACEOptimizer = "sgd",
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

    def fit(self, X: Any, y: Any) -> Self:
        """Play the relaxed game on ``X [n, d]`` with labels ``y [n]`` and keep the rank-k projection."""
        from interplab.runtime import torch_threads

        with torch_threads(1):
            return self._fit(X, y)

    def _fit(self, X, y):
        import torch
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import log_loss

        X, y, classes = check_xy(X, y)
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
        assert best_P is not None, "no RLACE evaluation produced a finite loss"
        self._set_orthogonal(self._top(best_P, self.rank), center)
        return self
